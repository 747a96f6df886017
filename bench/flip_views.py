"""The shipped model on the validation photos mirrored and turned: how far its figures
move when nothing but the view's orientation changes, and what averaging them buys.

    python bench/flip_views.py [--model models/linewatch-tile]

Line views (the canonical crop) and uploads (judged as `/v1/classify` judges them) are
scored as they are, mirrored left-right, upside down and turned 180°, then as the mean
of the four. The transpose is left out: a tile on the belt is never filmed on its side.
Since uploads are judged in all four orientations (`pipeline/inference/uploads.py`),
their rows are the same in every orientation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.uploads import ORIENTATIONS, upload_probs
from linewatch.pipeline.training.evaluate import eval_items, read_rgb, score_view

DATA = Path("../shared/datasets/magnetic-tile/images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/linewatch-tile"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    model = Classifier(args.model, threads=2, device="cpu", max_batch=32)
    labels, items = eval_items(args.data, args.model / "split.json")
    truth = np.array([model.info.labels.index(labels[index]) for _, index in items])
    size = model.preprocessor.output_size[0]
    judges = {"line": model.predict, "upload": lambda views: upload_probs(model, views)}
    print("| views | orientation | macro-F1 | recall (FA) at its threshold | best ≤ 1 % FA |")
    print("|---" * 5 + "|")
    for kind, judge in judges.items():
        views = [read_rgb(item, size, "line" if kind == "line" else "photo") for item, _ in items]
        scored = {}
        for name, flip in ORIENTATIONS.items():
            flipped = [flip(view) for view in views]
            scored[name] = np.concatenate(
                [judge(flipped[start : start + 32]) for start in range(0, len(views), 32)]
            )
        scored["mean of the four"] = np.mean(list(scored.values()), axis=0)
        for name, probs in scored.items():
            result = score_view(probs, truth, model.info, 0.01)
            at = f"{result['defect_recall']:.3f} ({result['false_alarm_rate']:.3f})"
            best = result["budget"]["best_recall"]
            print(f"| {kind} | {name} | {result['macro_f1']:.3f} | {at} | {best:.3f} |")


if __name__ == "__main__":
    main()
