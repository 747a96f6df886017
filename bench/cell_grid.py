"""Issue 23: would a finer cell grid, or a lower share of defect pixels that makes a
cell a defect cell, let the cell features see the smallest defects?

    python bench/cell_grid.py runs/cellgrid [--views-per-image 20] [--fine-epochs 6]

`bench/cell_features.py`'s protocol (the same views, seed 0: line views of every
training photo with their masks; the validation photos' canonical line views), with
the trunk's maps kept on the **20 × 20** grid of stage 3 (stages 4 and 5 repeated
onto it); the shipped 10 × 10 grid is its 2 × 2 average (exactly what `PooledAndGrid`
gives: stage 3 average-pooled, stages 4 and 5 as they are). Rows: the pooled taps alone;
then pooled taps + cross-fitted cell features for each (grid, defect share) in
`COMBOS`, the shipped one first. A 20 × 20 cell head costs 4 × a 10 × 10 one per epoch,
so it trains `--fine-epochs` epochs (the shipped 12 at 10 × 10). Each head twice (seeds
0 and 1): the seed moves these figures by ±0.03. The last column: the defect score
(1 − P(free)) of the photos every recipe misses, and of the good photo every recipe
calls a blowhole.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cell_features import FREE, LABELS, cached  # noqa: E402

from linewatch.pipeline.training.cell_features import (  # noqa: E402
    CellSettings,
    CellViews,
    cell_features,
    cross_fitted,
)
from linewatch.pipeline.training.efficientnet import (  # noqa: E402
    PooledFeatures,
    TeacherHead,
    pool_maps,
)
from linewatch.pipeline.training.metrics import class_report, recall_at_false_alarms  # noqa: E402
from linewatch.pipeline.training.teacher import (  # noqa: E402
    head_logits,
    photo_folds,
    train_head,
)
from linewatch.pipeline.training.train import TrainConfig  # noqa: E402

COMBOS = ((10, 0.1), (10, 0.02), (20, 0.1))  # (grid, defect share); the shipped first
HARD = ("blowhole/exp1_num_346311", "uneven/exp5_num_124744", "uneven/exp3_num_139838")
GOOD_LOOKALIKE = "free/exp4_num_346361"


class FineGrid(PooledFeatures):
    """The pooled taps and the tapped maps on the finest tap's grid."""

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:  # type: ignore[override]
        maps = self.backbone.tap_maps(x)
        fine = maps[0].shape[-1]
        on_grid = [
            m
            if m.shape[-1] == fine
            else nn.functional.interpolate(m, scale_factor=fine // m.shape[-1], mode="nearest")
            for m in maps
        ]
        return pool_maps(maps), paddle.concat(on_grid, axis=1)


def every_combo_targets(mask: np.ndarray | None, label: int) -> np.ndarray:
    """The view's cell targets for every combo, concatenated."""
    out = []
    for grid, share in COMBOS:
        if mask is None:
            out.append(np.full(grid * grid, -1, np.int8))
            continue
        cells = cv2.resize(
            mask.astype(np.float32) / 255, (grid, grid), interpolation=cv2.INTER_AREA
        )
        out.append(np.where(cells.reshape(-1) >= share, label, FREE).astype(np.int8))
    return np.concatenate(out)


def coarse(grids: np.ndarray) -> np.ndarray:
    """20 × 20 maps -> their 2 × 2 averages (the shipped 10 × 10 grid)."""
    n, channels, height, width = grids.shape
    out = np.empty((n, channels, height // 2, width // 2), np.float16)
    for start in range(0, n, 512):
        chunk = grids[start : start + 512].astype(np.float32)
        out[start : start + 512] = chunk.reshape(-1, channels, height // 2, 2, width // 2, 2).mean(
            (3, 5)
        )
    return out


def score(logits: np.ndarray, truth: np.ndarray, watched: list[int]) -> str:
    report = class_report(truth, logits.argmax(1), LABELS)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    defect = 1 - probs[:, FREE]
    best = recall_at_false_alarms(defect, truth != FREE, 0.01).recall
    per_class = " | ".join(f"{f1:.2f}" for f1 in report.f1)
    return f"{report.macro_f1:.3f} | {best:.3f} | {per_class} | " + " ".join(
        f"{defect[i]:.2f}" for i in watched
    )


def heads(name: str, train: np.ndarray, val: np.ndarray, cache: dict, watched: list[int]) -> None:
    for seed in (0, 1):
        config = TrainConfig(data="", run_dir="", epochs=40, batch_size=64, lr=1e-3, seed=seed)
        head = TeacherHead(len(LABELS), train.shape[1])
        train_head(head, train, cache["targets"], config, LABELS)
        logits = head_logits(head, val)
        print(f"| {name}, head seed {seed} | {score(logits, cache['val_targets'], watched)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--views-per-image", type=int, default=20)
    parser.add_argument("--fine-epochs", type=int, default=6)
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    cache = cached(args.run_dir, args.views_per_image, FineGrid, every_combo_targets, name="fine")
    items = [str(item) for item in cache["val_items"]]
    watched = [
        next(i for i, item in enumerate(items) if item.endswith(f"{name}.jpg"))
        for name in (*HARD, GOOD_LOOKALIKE)
    ]
    grids = {20: (cache["train_grid"], cache["val_grid"])}
    grids[10] = (coarse(grids[20][0]), coarse(grids[20][1]))
    half = photo_folds(cache["photo_targets"], 2, 0)
    print(
        f"| head | macro-F1 | best recall ≤ 1 % FA | {' | '.join(LABELS)} "
        f"| defect score: {', '.join(HARD)}; {GOOD_LOOKALIKE} |"
    )
    print("|---" * 10 + "|")
    heads("pooled taps", cache["train_po"], cache["val_po"], cache, watched)
    offset = 0
    for grid, share in COMBOS:
        targets = cache["cells"][:, offset : offset + grid * grid]
        offset += grid * grid
        epochs = args.fine_epochs if grid == 20 else 12
        views = CellViews(grids[grid][0], targets, cache["targets"], cache["photo"])
        extra, _, cell_head = cross_fitted(
            views, half, CellSettings(len(LABELS), FREE, epochs=epochs), progress=lambda _: None
        )
        val_extra = cell_features(cell_head, grids[grid][1])
        heads(
            f"+ cells {grid} × {grid}, defect share {share}, {epochs} epochs",
            np.c_[cache["train_po"], extra],
            np.c_[cache["val_po"], val_extra],
            cache,
            watched,
        )
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
