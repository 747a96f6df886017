"""The combined verdict on a defect class nobody trained for (issue 26), on a
train-embedding run's cached taps (`RUN/embedding/taps.npz`: 16 line views of each
training photo, the canonical view of each validation photo, as the shipped head reads
them).

    python bench/loco_verdict.py runs/embed --model models/linewatch-tile

For each defect class X in turn, as on a line that meets X for the first time:
- the **classifier** is the shipped recipe's head (464 → 256 → 6, 40 epochs, AdamW,
  label smoothing, square-root class balance) trained on the taps **without X's
  photos** (X's output never wins), its defect score 1 − P(free) at the shipped
  temperature, NG at the shipped threshold;
- the **gallery** is fitted (whitening) and filled without X, `unknown` at the shipped
  novelty threshold.
A validation view of X is caught when either says NG; a good (`free`) view is falsely
rejected when either does. A head on every class, trained the same way, is the control
(it should match the shipped head's figures). Single canonical views, not parts: a part
on a line has ~4 views and the top-2 mean, so these figures are a view-level bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import paddle
import yaml

from linewatch.pipeline.training.efficientnet import TeacherHead
from linewatch.pipeline.training.embedding_train import TAPS_FILE, Taps
from linewatch.pipeline.training.export import defect_mass
from linewatch.pipeline.training.teacher import head_logits, train_head
from linewatch.pipeline.training.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_variants import whitening  # noqa: E402

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")
NORMAL = LABELS.index("free")


def defect_scores(taps: Taps, keep: np.ndarray, temperature: float, run_dir: Path) -> np.ndarray:
    """1 − P(free) of each validation view by a head trained on the views in `keep`."""
    config = TrainConfig(
        data="", run_dir=str(run_dir), epochs=40, batch_size=64, lr=1e-3, weight_decay=0.02
    )
    paddle.seed(0)
    head = TeacherHead(len(LABELS), taps.train.shape[1])
    train_head(head, taps.train[keep], taps.train_targets[keep], config, LABELS)
    return defect_mass(head_logits(head, taps.val), temperature, NORMAL)


def novelty(taps: Taps, keep: np.ndarray) -> np.ndarray:
    """Each validation view's novelty against a gallery (4 views per photo) without X."""
    embed = whitening(taps.train[keep], 128, 0.01)
    gallery = embed(taps.train[keep & taps.views(0, 4)])
    return 1.0 - (embed(taps.val) @ gallery.T).max(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", type=Path, default=Path("models/linewatch-tile"))
    args = parser.parse_args()
    section = yaml.safe_load((args.model / "inference.yml").read_text())
    threshold = float(section["Linewatch"]["defect_threshold"])
    temperature = float(section["Linewatch"]["calibration_temperature"])
    novelty_threshold = float(section["Gallery"]["novelty_threshold"])
    with np.load(args.run_dir / "embedding" / TAPS_FILE) as stored:
        taps = Taps(**{name: stored[name] for name in Taps.__dataclass_fields__})
    free = taps.val_targets == NORMAL
    print(f"threshold {threshold:.3f} (T {temperature:.3f}), novelty {novelty_threshold:.4f}")
    print(
        "| left out | its views | classifier NG | gallery unknown | either | free rejected "
        "(classifier / gallery / either) | X called free |"
    )
    print("|---" * 7 + "|")
    for left_out in [None, *[c for c in range(len(LABELS)) if c != NORMAL]]:
        keep = np.ones(len(taps.train_targets), bool)
        if left_out is not None:
            keep = taps.train_targets != left_out
        scores = defect_scores(taps, keep, temperature, args.run_dir)
        classifier = scores >= threshold
        gallery = novelty(taps, keep) >= novelty_threshold
        either = classifier | gallery
        name = "none (control)" if left_out is None else LABELS[left_out]
        mine = ~free if left_out is None else taps.val_targets == left_out
        print(
            f"| {name} | {mine.sum()} | {classifier[mine].sum()} | {gallery[mine].sum()} "
            f"| **{either[mine].sum()}** ({either[mine].mean():.2f}) | {classifier[free].sum()} / "
            f"{gallery[free].sum()} / {either[free].sum()} of {free.sum()} "
            f"| {(~either[mine]).sum()} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
