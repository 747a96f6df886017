"""CPU predictor speed (and, with --data, accuracy) of exported classifier folders, side by
side in one run: student vs teacher, FP32 vs INT8.

    python bench/model_speed.py models/linewatch-tile models/linewatch-tile-teacher
    python bench/model_speed.py --threads 2 --repeats 5 DIR [DIR ...]
    python bench/model_speed.py DIR [DIR ...] --data ../shared/datasets/magnetic-tile/images \
        --split-file models/linewatch-tile/split.json

Predictor only (oneDNN, `--threads` math threads; INT8 kernels for a folder whose
inference.yml says `precision: int8`), already preprocessed float32 input, as
`linewatch model eval` measures it. Each figure is the best of `--repeats` rounds, models
interleaved, because the machine is shared and noisy: best-of is the closest reading of
what the hardware gives. With `--data` and `--split-file`, each model is also scored on
the split's validation photos as line views: macro-F1, recall and false alarms at its
shipped threshold, and the best recall within `--max-false-alarms`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from linewatch.pipeline.inference.classifier import Classifier

BATCHES = (1, 8, 32)


def best_images_per_s(classifier: Classifier, batch: int, seconds: float = 1.0) -> float:
    width, height = classifier.preprocessor.output_size
    data = np.random.default_rng(0).normal(0, 1, (batch, 3, height, width)).astype(np.float32)
    classifier.infer(data)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        classifier.infer(data)
        runs += 1
    return batch * runs / (time.perf_counter() - start)


def accuracy(
    classifier: Classifier, *, data_dir: Path, split_file: Path, max_false_alarms: float
) -> str:
    """macro-F1 | recall (false alarms) at the model's threshold | best recall in budget."""
    from linewatch.pipeline.training.evaluate import eval_items, predict_items
    from linewatch.pipeline.training.metrics import (
        class_report,
        defect_report,
        recall_at_false_alarms,
    )

    info = classifier.info
    folder_labels, items = eval_items(data_dir, split_file)
    truth = np.array([info.labels.index(folder_labels[index]) for _, index in items])
    probs = predict_items(classifier, items, views="line")
    normal = [info.labels.index(label) for label in info.normal_labels]
    mass, is_defect = 1 - probs[:, normal].sum(axis=1), ~np.isin(truth, normal)
    f1 = class_report(truth, probs.argmax(axis=1), info.labels).macro_f1
    shipped = defect_report(mass, is_defect, info.defect_threshold)
    budget = recall_at_false_alarms(mass, is_defect, max_false_alarms)
    caught = int(round(shipped.recall * is_defect.sum()))
    return (
        f"{f1:8.3f} {shipped.recall:8.3f} ({caught}/{is_defect.sum()}, "
        f"FA {shipped.false_alarm_rate:.1%}) {budget.recall:8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, help="ImageFolder root (with --split-file)")
    parser.add_argument("--split-file", type=Path, help="score its validation photos")
    parser.add_argument("--max-false-alarms", type=float, default=0.01)
    args = parser.parse_args()
    classifiers = {
        m: Classifier(m, threads=args.threads, device="cpu", max_batch=32) for m in args.models
    }
    scores = {}
    if args.data and args.split_file:
        for model, classifier in classifiers.items():
            scores[model] = accuracy(
                classifier,
                data_dir=args.data,
                split_file=args.split_file,
                max_false_alarms=args.max_false_alarms,
            )
    best = {(m, b): 0.0 for m in args.models for b in BATCHES}
    for _ in range(args.repeats):
        for model, classifier in classifiers.items():
            for batch in BATCHES:
                rate = best_images_per_s(classifier, batch)
                best[model, batch] = max(best[model, batch], rate)
    print_table(classifiers, best, scores, args)


def print_table(classifiers: dict, best: dict, scores: dict, args: argparse.Namespace) -> None:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"CPU predictor, {args.threads} threads, best of {args.repeats} (img/s); "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load}"
    )
    batches = " ".join(f"{'b' + str(b):>7s}" for b in BATCHES)
    header = f"{'model':40s} {'prec':>5s} {'MB':>6s} {batches} {'b1 ms':>6s}"
    if scores:
        budget = f"R@{args.max_false_alarms:.0%}FA"
        header += f" {'macroF1':>8s} {'recall':>8s} {'(at threshold)':>18s} {budget:>8s}"
    print(header)
    for model, classifier in classifiers.items():
        megabytes = (model / "inference.pdiparams").stat().st_size / 1e6
        rates = " ".join(f"{best[model, b]:7.0f}" for b in BATCHES)
        line = f"{str(model):40s} {classifier.info.precision:>5s} {megabytes:6.1f} {rates}"
        line += f" {1000 / best[model, 1]:6.1f}"
        print(line + (f" {scores[model]}" if model in scores else ""))


if __name__ == "__main__":
    main()
