"""Gallery search time against the predictor's time per batch of 32, side by side in one run.

    python bench/gallery_bench.py models/linewatch-tile
    python bench/gallery_bench.py DIR --sizes 1000 10000 100000 --threads 2

The predictor runs the model folder on a preprocessed batch of 32 (as the inference
worker does; output 1, the embedding, comes from the same call when the graph has it).
The search is `pipeline/gallery/search.py: search`, exact cosine nearest neighbour (a
matmul and a partial sort), of 32 unit queries in galleries of random unit rows of the
model's embedding size (`--size` for a folder without one), on one BLAS thread as the
inference worker runs it (`threadpool_limits`). Figures are the best of
`--repeats` rounds, interleaved, because the machine is shared. The last column is the
search's share of the predictor's time; an index (faiss IVF/HNSW) pays once exact search
exceeds the budget (`--budget`, 10 %): the line printed last says at what gallery size
that happens, from the measured cost per entry.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from linewatch.pipeline.gallery.search import search
from linewatch.pipeline.gallery.store import Gallery
from linewatch.pipeline.inference.classifier import Classifier

BATCH = 32


def best_seconds(call, repeats: int, seconds: float = 0.5) -> float:  # type: ignore[no-untyped-def]
    """The fastest of `repeats` rounds, each the mean over at least `seconds` of calls."""
    call()
    best = float("inf")
    for _ in range(repeats):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 3:
            call()
            runs += 1
        best = min(best, (time.perf_counter() - start) / runs)
    return best


def random_gallery(entries: int, size: int, rng: np.random.Generator) -> Gallery:
    labels = [f"class{i % 6}" for i in range(entries)]
    return Gallery.of(rng.normal(size=(entries, size)).astype(np.float32), labels, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--size", type=int, default=128, help="D without an embedding output")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.10)
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as workers/inference.py
    classifier = Classifier(args.model, threads=args.threads, device="cpu", max_batch=BATCH)
    width, height = classifier.preprocessor.output_size
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 1, (BATCH, 3, height, width)).astype(np.float32)
    size = classifier.embedding_size or args.size
    queries = rng.normal(size=(BATCH, size)).astype(np.float32)
    galleries = {entries: random_gallery(entries, size, rng) for entries in args.sizes}
    predictor = best_seconds(lambda: classifier.infer_with_embeddings(batch), args.repeats)
    print(
        f"{args.model}: predictor {predictor * 1000:.1f} ms per batch of {BATCH} "
        f"({args.threads} threads; embedding D={size}"
        f"{'' if classifier.embedding_size else ', from --size: the graph has none'})"
    )
    print(f"{'entries':>8} {'search ms':>10} {'predictor ms':>13} {'share':>7}")
    per_entry = []
    for entries, gallery in galleries.items():
        searching = best_seconds(lambda g=gallery: search(g, queries), args.repeats)
        per_entry.append(searching / entries)
        print(
            f"{entries:>8} {searching * 1000:>10.2f} {predictor * 1000:>13.1f} "
            f"{searching / predictor:>7.1%}"
        )
    slope = float(np.median(per_entry))
    pays = int(args.budget * predictor / slope)
    print(
        f"exact search costs ~{slope * 1e9:.0f} ns per entry per batch of {BATCH}: it passes "
        f"{args.budget:.0%} of the predictor's time at ~{pays:,} entries; an index "
        "(faiss IVF/HNSW) pays from about there"
    )


if __name__ == "__main__":
    main()
