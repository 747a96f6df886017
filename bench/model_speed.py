"""CPU predictor speed of exported classifier folders, side by side (teacher vs student).

    python bench/model_speed.py models/linewatch-tile models/linewatch-tile-teacher
    python bench/model_speed.py --threads 2 --repeats 5 DIR [DIR ...]

Predictor only (oneDNN, `--threads` math threads), already preprocessed float32 input, as
`linewatch eval` measures it. Each figure is the best of `--repeats` rounds, models
interleaved, because the machine is shared and noisy: best-of is the closest reading of
what the hardware gives.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    classifiers = {
        m: Classifier(m, threads=args.threads, device="cpu", max_batch=32) for m in args.models
    }
    best = {(m, b): 0.0 for m in args.models for b in BATCHES}
    for _ in range(args.repeats):
        for model, classifier in classifiers.items():
            for batch in BATCHES:
                rate = best_images_per_s(classifier, batch)
                best[model, batch] = max(best[model, batch], rate)
    print(f"CPU predictor, {args.threads} threads, best of {args.repeats} (img/s)")
    print(
        f"{'model':40s} {'size':>5s} {'MB':>6s} " + " ".join(f"{'b' + str(b):>8s}" for b in BATCHES)
    )
    for model, classifier in classifiers.items():
        size = classifier.preprocessor.output_size[0]
        megabytes = (model / "inference.pdiparams").stat().st_size / 1e6
        rates = " ".join(f"{best[model, b]:8.0f}" for b in BATCHES)
        batch1_ms = 1000 / best[model, 1]
        print(
            f"{str(model):40s} {size:5d} {megabytes:6.1f} {rates}   (batch 1: {batch1_ms:.1f} ms)"
        )


if __name__ == "__main__":
    main()
