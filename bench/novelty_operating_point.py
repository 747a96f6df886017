"""The gallery's novelty threshold as an operating point, leave-one-class-out, on a
train-embedding run's cached taps (`RUN/embedding/taps.npz`), the protocol of
`--leave-out-each`: per defect class, the whitened map fitted without it, the gallery =
the first 4 views of each training photo of the other classes, the queries = the
validation photos' canonical views (one view each, not a part's top-2 of 4). Reports,
per threshold, the share of the unseen class's views at or above it (unknown recall)
and of the other classes' views (known views called novel).

    python bench/novelty_operating_point.py /tmp/gt/runs/white 0.716432 0.722084
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from linewatch.pipeline.gallery.search import search
from linewatch.pipeline.training.embedding_train import (
    TAPS_FILE,
    EmbeddingConfig,
    Taps,
    embed,
    gallery_of,
    train_head,
)
from linewatch.pipeline.training.gallery_export import GALLERY_VIEWS

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("thresholds", type=float, nargs="+")
    args = parser.parse_args()
    embed_dir = args.run_dir / "embedding"
    config = EmbeddingConfig(**json.loads((embed_dir / "config.json").read_text()))
    config = replace(config, run_dir=str(args.run_dir))
    with np.load(embed_dir / TAPS_FILE) as stored:
        taps = Taps(**{name: stored[name] for name in Taps.__dataclass_fields__})
    rows = {t: {"unknown_recall": {}, "known_novel": {}} for t in args.thresholds}
    first = taps.views(0, GALLERY_VIEWS)
    for index, label in enumerate(LABELS):
        if label == "free":
            continue
        keep = taps.train_targets != index
        head = train_head(
            config, taps.train[keep], taps.train_targets[keep], len(LABELS), f"without {label}"
        )
        gallery = gallery_of(embed(head, taps.train), taps, LABELS, keep & first)
        novelty = search(gallery, embed(head, taps.val)).novelty
        unseen = taps.val_targets == index
        quantiles = np.percentile(novelty[unseen], [10, 50, 90]).round(3).tolist()
        print(
            f"{label}: unseen novelty p10/p50/p90 {quantiles}, max {novelty[unseen].max():.3f};"
            f" known p50 {np.median(novelty[~unseen]):.3f}, max {novelty[~unseen].max():.3f}"
        )
        for t in args.thresholds:
            rows[t]["unknown_recall"][label] = float((novelty[unseen] >= t).mean())
            rows[t]["known_novel"][label] = float((novelty[~unseen] >= t).mean())
    for t, row in rows.items():
        recall = np.mean(list(row["unknown_recall"].values()))
        known = np.mean(list(row["known_novel"].values()))
        print(f"threshold {t}: unknown recall {recall:.3f}, known views novel {known:.3f}")
        print("  per class recall", {k: round(v, 3) for k, v in row["unknown_recall"].items()})
        print("  per class known", {k: round(v, 3) for k, v in row["known_novel"].items()})


if __name__ == "__main__":
    main()
