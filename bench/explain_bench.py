"""Occlusion heat maps on real validation photos: does the hottest window land on the
defect? (the "pointing game" against the dataset's defect masks), and what a heat map
costs.

    python bench/explain_bench.py --model models/linewatch-tile \\
        --split-file models/linewatch-tile/split.json

Each defective validation photo (never trained on) is cut as the line cuts a part
(`canonical_view`: on the belt, `crop_view` with the model's margin), its mask the same
way. A hit: the hottest window's centre cell (± one cell) touches the mask. Chance: the
share of window centres that would hit, averaged over the photos. Writes its section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from results_md import write_section

from linewatch.pipeline.inference.explain import GRID, occlusion_heat
from linewatch.pipeline.inference.loading import load_model
from linewatch.pipeline.training.line_views import BELT_LEVEL, place_on_belt
from linewatch.pipeline.video.crop import crop_view


def line_view(photo_path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its mask as the line would cut them (RGB view, boolean mask)."""
    photo = cv2.imread(photo_path, cv2.IMREAD_GRAYSCALE)
    mask_path = Path(photo_path.replace("/images/", "/masks/")).with_suffix(".png")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if photo is None or mask is None:
        raise SystemExit(f"cannot read {photo_path} or its mask {mask_path}")
    frame, frame_mask, box = place_on_belt(photo, size, BELT_LEVEL, mask=mask)
    view = crop_view(np.clip(frame, 0, 255).astype(np.uint8), box, size=(size, size))
    return np.dstack([view] * 3), crop_view(frame_mask, box, size=(size, size)) > 127


def hits(mask: np.ndarray, peak: tuple[float, float]) -> bool:
    side = mask.shape[0]
    cell = side // GRID
    col, row = int(peak[0] * side), int(peak[1] * side)
    return bool(mask[max(0, row - cell) : row + cell, max(0, col - cell) : col + cell].any())


def chance(mask: np.ndarray) -> float:
    centres = [((c + 0.5) / GRID, (r + 0.5) / GRID) for r in range(GRID) for c in range(GRID)]
    return float(np.mean([hits(mask, centre) for centre in centres]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/linewatch-tile"))
    parser.add_argument("--split-file", type=Path, default=Path("models/linewatch-tile/split.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/RESULTS.md"))
    args = parser.parse_args()
    model = load_model(args.model, threads=args.threads)
    model.warm_up()
    split = json.loads(args.split_file.read_text())
    size = model.preprocessor.output_size[0]
    per_class: dict[str, list[bool]] = {}
    chances: dict[str, list[float]] = {}
    seconds = []
    for path, index in split["val"]:
        label = split["labels"][index]
        if label in model.info.normal_labels:
            continue
        view, mask = line_view(path, size)
        start = time.perf_counter()
        heat = occlusion_heat(model, view)
        seconds.append(time.perf_counter() - start)
        per_class.setdefault(label, []).append(hits(mask, heat.peak()))
        chances.setdefault(label, []).append(chance(mask))
    rows = [
        (label, sum(v), len(v), np.mean(chances[label])) for label, v in sorted(per_class.items())
    ]
    every_chance = np.mean([c for values in chances.values() for c in values])
    total = sum(row[1] for row in rows), sum(row[2] for row in rows)
    lines = [
        "## Evidence heat maps (occlusion)",
        "",
        f"Run: `python bench/explain_bench.py --model {args.model} --split-file "
        f"{args.split_file}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"model version {model.info.version}, {args.threads} CPU threads.",
        "",
        "| class | hottest window on the defect | by chance |",
        "|---|---|---|",
        *[f"| {label} | {h}/{n} | {c:.0%} |" for label, h, n, c in rows],
        f"| all | {total[0]}/{total[1]} ({total[0] / total[1]:.0%}) | {every_chance:.0%} |",
        "",
        f"One heat map ({GRID * GRID + 1} forward passes at {size} px): median "
        f"{1000 * np.median(seconds):.0f} ms, p95 {1000 * np.percentile(seconds, 95):.0f} ms.",
        "",
        "- Occlusion sensitivity, not Grad-CAM: the line runs an exported graph with no",
        "  gradients (`pipeline/inference/explain.py`). `GET /v1/parts/{id}/heatmap.jpg`",
        "  draws it over a part's evidence crop on request; nothing is computed per part.",
        "- Chance is high for fray and uneven (large or edge-long masks): read their rows",
        "  against it.",
    ]
    print("\n".join(lines))
    write_section(args.out, name="explain-bench", body="\n".join(lines))


if __name__ == "__main__":
    main()
