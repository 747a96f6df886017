"""Old vs new inference preprocessing, side by side in one process.

    python bench/preprocess_bench.py                  # 256x256 line frames, like run_bench
    python bench/preprocess_bench.py --size 640x360   # larger camera frames

Frames come from the simulated line and travel as JPEG, as ingest sends them.
"old" is the previous implementation, kept here only as a reference: decode to
BGR + cvtColor, per-image float conversion, normalise, transpose copy. Each
figure is the best of --repeats runs, old and new interleaved, because the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.preprocess import Preprocessor
from linewatch.pipeline.simulation.simulator import LineSpec, TileSource, render_line
from linewatch.pipeline.video.codec import decode_image, encode_image

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 8, 32)


def old_decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def old_batch(pre: Preprocessor, images: Sequence[np.ndarray]) -> np.ndarray:
    stacked = np.stack([pre.image(rgb) for rgb in images]).astype(np.float32)
    stacked *= pre.alpha
    stacked += pre.beta
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def line_jpegs(count: int, size: tuple[int, int]) -> list[bytes]:
    spec = LineSpec(parts=count // 8 + 1)
    frames = itertools.islice(render_line(spec, TileSource(None, spec.tile_size), []), count)
    return [encode_image(cv2.resize(f, size, interpolation=cv2.INTER_AREA), "jpeg") for f in frames]


def best_rates(
    calls: dict[str, Callable[[], object]], count: int, repeats: int
) -> dict[str, float]:
    """Images per second of each call, best of `repeats`, the calls interleaved."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256x256", help="frame WxH on the wire")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "linewatch-tile")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    jpegs = line_jpegs(32, (width, height))
    classifier = Classifier(args.model, max_batch=32)
    classifier.warm_up()
    pre = classifier.preprocessor
    old_pre = lambda data: old_batch(pre, [old_decode(d) for d in data])  # noqa: E731
    new_pre = lambda data: pre.batch([decode_image(d, "jpeg", width, height) for d in data])  # noqa: E731
    assert np.allclose(old_pre(jpegs), new_pre(jpegs), atol=1e-5), "old and new tensors differ"

    print(f"{width}x{height} JPEG frames, {classifier.info.name}, img/s, best of {args.repeats}")
    print(
        f"{'batch':>5} {'decode+pre old':>15} {'new':>8} {'x':>5}   "
        f"{'+predictor old':>15} {'new':>8} {'x':>5} {'predictor alone':>16}"
    )
    full: dict[int, float] = {}
    for size in BATCHES:
        chunks = [jpegs[i : i + size] for i in range(0, len(jpegs), size)]
        tensors = [new_pre(c) for c in chunks]
        rates = best_rates(
            {
                "pre_old": lambda c=chunks: [old_pre(b) for b in c],
                "pre_new": lambda c=chunks: [new_pre(b) for b in c],
                "all_old": lambda c=chunks: [classifier.infer(old_pre(b)) for b in c],
                "all_new": lambda c=chunks: [classifier.infer(new_pre(b)) for b in c],
                "predictor": lambda t=tensors: [classifier.infer(b) for b in t],
            },
            len(jpegs),
            args.repeats,
        )
        full[size] = rates["all_new"]
        print(
            f"{size:>5} {rates['pre_old']:>15.0f} {rates['pre_new']:>8.0f} "
            f"{rates['pre_new'] / rates['pre_old']:>5.1f}   {rates['all_old']:>15.0f} "
            f"{rates['all_new']:>8.0f} {rates['all_new'] / rates['all_old']:>5.1f} "
            f"{rates['predictor']:>16.0f}"
        )
    print(f"batched gain, new (batch 32 / batch 1): {full[32] / full[1]:.1f}x")


if __name__ == "__main__":
    main()
