"""Issue 26's whole verdict for a class nobody trained for, seen by the cell head: does
a cell head trained without class X still see X's defects as *some* defect?

    python bench/loco_cells.py runs/cells4 [--views-per-image 4]

Views as `bench/defect_cell_few_shot.py` (the cache of `bench/cell_features.py` plus
each training photo's canonical view). For each defect class X in turn (and for none,
the control) the product's cell head is trained without X's views; a validation photo's
canonical line view scores the highest defect probability (1 - P(free)) of its cells.
A row gives, per class, the share of its validation views above the threshold that
flags 1 % of the training photos' free views (in-sample for the head, so optimistic),
and the validation free views flagged at that threshold.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cell_features import FREE, LABELS, cached  # noqa: E402
from defect_cell_few_shot import with_canonical  # noqa: E402

from linewatch.pipeline.training.cell_features import (  # noqa: E402
    CellSettings,
    CellViews,
    train_cell_head,
)

FALSE_ALARMS = 0.01


def highest_defect_cell(head, grids: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Per view: the highest 1 - P(free) over its cells."""
    out = []
    with paddle.no_grad():
        for start in range(0, len(grids), 256):
            chunk = paddle.to_tensor(grids[start : start + 256].astype(np.float32))
            probs = paddle.nn.functional.softmax(head.cell_logits(chunk), axis=-1).numpy()
            out.append((1 - probs[..., FREE]).max(1))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--views-per-image", type=int, default=4)
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    cache = with_canonical(
        args.run_dir, cached(args.run_dir, args.views_per_image), args.views_per_image
    )
    targets, val_targets = cache["targets"], cache["val_targets"]
    views = CellViews(cache["train_grid"], cache["cells"], targets, cache["photo"])
    defects = [i for i in range(len(LABELS)) if i != FREE]
    print(f"| left out | {' | '.join(LABELS[i] for i in defects)} | free views flagged |")
    print("|---" * (len(defects) + 2) + "|")
    for left_out in [None, *defects]:
        seen = np.flatnonzero(targets != left_out)
        head = train_cell_head(
            views, seen, CellSettings(len(LABELS), FREE), progress=lambda line: None
        )
        train_score = highest_defect_cell(head, cache["train_grid"][targets == FREE])
        threshold = np.quantile(train_score, 1 - FALSE_ALARMS)
        score = highest_defect_cell(head, cache["val_grid"])
        caught = [f"{np.mean(score[val_targets == i] > threshold):.2f}" for i in defects]
        flagged = np.mean(score[val_targets == FREE] > threshold)
        name = "none" if left_out is None else LABELS[left_out]
        print(f"| {name} | {' | '.join(caught)} | {flagged:.3f} |", flush=True)


if __name__ == "__main__":
    main()
