"""Part-level figures of model folders on the two validation moving lines, side by side:
the dark belt and the mid-grey textured belt the training never used (validation photos
only, 120 parts each, the default locator, 960 × 540, tiles at their own aspect).

    python bench/moving_lines.py runs/lines models/linewatch-tile runs/new-model [...]

Each line is simulated once into OUT/<line>/ (kept for later runs); each model runs it
with `linewatch run` and is scored by `linewatch line score --parts-truth`. Prints one
row per model and line: defective parts rejected, good parts rejected, class accuracy.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

DATA = "../shared/datasets/magnetic-tile/images"
SPLIT = "models/linewatch-tile/split.json"
COMMON = ["--split", "val", "--parts", "120", "--seed", "1", "--width", "960"]
COMMON += ["--height", "540", "--frames-per-part", "24", "--aspect", "0.3,2.6"]
LINES = {
    "dark": [],
    "grey90": ["--belt-level", "90", "--tone", "0.6,1.4", "--belt-grain", "10"],
}
LINEWATCH = str(Path(sys.executable).with_name("linewatch"))


def simulate(out: Path, line: str) -> Path:
    folder = out / line
    if not (folder / "cam1.parts.csv").exists():
        base = [LINEWATCH, "simulate", "--out", str(folder), "--images", DATA]
        subprocess.run(base + ["--split-file", SPLIT, *COMMON, *LINES[line]], check=True)
    return folder


def score(out: Path, video: Path, model: Path, name: str) -> str:
    data = out / f"data-{name}"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    config = out / f"line-{name}.yaml"
    settings = {
        "line": name,
        "data_dir": str(data),
        "cameras": [
            {"id": "cam1", "url": str(video / "cam1.mp4"), "parts": {"method": "contrast"}}
        ],
        "inference": {"model_dir": str(model)},
        "verdict": {"deadline_ms": 600_000},
    }
    config.write_text(yaml.safe_dump(settings))
    subprocess.run([LINEWATCH, "run", "--config", str(config)], check=True, capture_output=True)
    scored = subprocess.run(
        [LINEWATCH, "line", "score", "--config", str(config), "--camera", "cam1"]
        + ["--fps", "10", "--parts-truth", str(video / "cam1.parts.csv")],
        check=True,
        capture_output=True,
        text=True,
    )
    return scored.stdout


def summary(report: str) -> str:
    """The report's lines that carry the part figures."""
    keep = re.compile(r"defective|good|accuracy|counted|missed", re.IGNORECASE)
    return " · ".join(line.strip() for line in report.splitlines() if keep.search(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("models", type=Path, nargs="*")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for line in LINES:
        video = simulate(args.out, line)
        for index, model in enumerate(args.models):
            start = time.time()
            report = score(args.out, video, model, f"{line}-{index}")
            print(f"| {model} | {line} | {summary(report)} | {time.time() - start:.0f} s |")
            (args.out / f"score-{line}-{index}.txt").write_text(report)


if __name__ == "__main__":
    main()
