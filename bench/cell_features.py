"""Does the defect masks' supervision help the frozen-trunk head? The same head with and
without the cell features of `linewatch train --cell-features`, on the same views.

    python bench/cell_features.py runs/cells [--views-per-image 20]

Views: `--views-per-image` randomised line views of every training photo (no photo
views), each with its defect mask carried through the same geometry, made by the
product's `teacher.make_pool`. One pass of the frozen EfficientNet-Lite0 stage-5 trunk
(`PooledAndGrid`) gives, per view, the head's 464 pooled taps and the 10 × 10 grid of
232 channels; the cell heads are the product's (`cell_features.cross_fitted`: the
training views' features from cell heads trained on the other half of the photos, the
validation views' from the one trained on all). Both heads: the shipped `train_head`
(40 epochs, batch 64, lr 1e-3, seed 0). Figures: the validation photos' canonical line
views. (The session-12 figures in the model card came from this bench's earlier copy of
the cell head; the recipe is the same, the random draws are not.)
"""

from __future__ import annotations

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from linewatch.pipeline.training import data  # noqa: E402
from linewatch.pipeline.training.cell_features import (  # noqa: E402
    CellSettings,
    CellViews,
    cell_features,
    cell_targets,
    cross_fitted,
)
from linewatch.pipeline.training.efficientnet import (  # noqa: E402
    PooledAndGrid,
    PooledFeatures,
    TeacherHead,
)
from linewatch.pipeline.training.metrics import class_report, recall_at_false_alarms  # noqa: E402
from linewatch.pipeline.training.nets import build_network  # noqa: E402
from linewatch.pipeline.training.static_runner import StaticRunner  # noqa: E402
from linewatch.pipeline.training.teacher import (  # noqa: E402
    canonical_views,
    extract_all,
    head_logits,
    make_pool,
    photo_folds,
    train_head,
)
from linewatch.pipeline.training.train import TrainConfig  # noqa: E402

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")
FREE = LABELS.index("free")
SIZE = 160
SPLIT = Path("models/linewatch-tile/split.json")


def cached(
    run: Path,
    per_image: int,
    trunk: type[PooledFeatures] = PooledAndGrid,
    cells: Callable[[np.ndarray | None, int], np.ndarray] | None = None,
    name: str = "cache",
) -> dict[str, np.ndarray]:
    """Views' grids (float16), pooled taps, cell targets, targets (`RUN/<name><k>.npz`):
    the maps of `trunk` (the shipped grid by default) and the targets `cells(view mask,
    class)` gives (the shipped ones by default)."""
    path = run / f"{name}{per_image}.npz"
    if path.exists():
        with np.load(path) as stored:
            return dict(stored)
    split = data.Split.load(SPLIT)
    size = data.photo_cache_size(SIZE)
    targets = np.array([index for _, index in split.train])
    photos = data.load_images(split.train, size)
    masks = [data.load_mask(item, i == FREE, size) for item, i in split.train]
    network = build_network("EfficientNetLite0_s5", len(LABELS))
    network.backbone.load_torch_weights()
    grid = SIZE // network.backbone.trunk.grid_stride
    views, view_targets, view_cells = make_pool(
        photos,
        targets,
        SIZE,
        per_image,
        seed=0,
        masks=masks,
        cells=cells or (lambda mask, label: cell_targets(mask, label, FREE, grid)),
    )
    runner = StaticRunner.of(trunk(network.backbone), SIZE, run / "trunk")
    train_po, train_grid = extract_all(runner, views, run, "training views")
    val = canonical_views(data.load_images(split.val, size), SIZE)
    val_po, val_grid = extract_all(runner, val, run, "validation views")
    result = {
        "train_grid": train_grid,
        "train_po": train_po,
        "val_grid": val_grid,
        "val_po": val_po,
        "cells": view_cells,
        "targets": view_targets,
        "photo_targets": targets,
        "photo": np.repeat(np.arange(len(targets)), per_image),
        "val_targets": np.array([index for _, index in split.val]),
        "val_items": np.array([item for item, _ in split.val]),
    }
    np.savez(path, **result)
    return result


def score(logits: np.ndarray, truth: np.ndarray) -> str:
    report = class_report(truth, logits.argmax(1), LABELS)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    best = recall_at_false_alarms(1 - probs[:, FREE], truth != FREE, 0.01).recall
    per_class = " | ".join(f"{f1:.2f}" for f1 in report.f1)
    return f"{report.macro_f1:.3f} | {best:.3f} | {per_class}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--views-per-image", type=int, default=20)
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    cache = cached(args.run_dir, args.views_per_image)
    views = CellViews(cache["train_grid"], cache["cells"], cache["targets"], cache["photo"])
    train_extra, _, cell_head = cross_fitted(
        views, photo_folds(cache["photo_targets"], 2, 0), CellSettings(len(LABELS), FREE)
    )
    val_extra = cell_features(cell_head, cache["val_grid"])
    config = TrainConfig(data="", run_dir=str(args.run_dir), epochs=40, batch_size=64, lr=1e-3)
    print(
        f"| head ({args.views_per_image} views per photo) | macro-F1 | best recall ≤ 1 % FA "
        f"| {' | '.join(LABELS)} |"
    )
    print("|---" * 9 + "|")
    heads = {
        "pooled taps (shipped)": (cache["train_po"], cache["val_po"]),
        "pooled taps + cell features": (
            np.c_[cache["train_po"], train_extra],
            np.c_[cache["val_po"], val_extra],
        ),
    }
    for name, (train, val) in heads.items():
        head = TeacherHead(len(LABELS), train.shape[1])
        train_head(head, train, cache["targets"], config, LABELS)
        print(f"| {name} | {score(head_logits(head, val), cache['val_targets'])} |", flush=True)
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
