"""Does the defect masks' supervision help the frozen-trunk head? A per-cell classifier on
the trunk's spatial taps, trained on the masks, gives each view 12 more features for the
shipped head; the same head with and without them, on the same views.

    python bench/cell_features.py runs/cells [--views-per-image 20]

Views: `--views-per-image` randomised line views of every training photo (the line
views of the shipped recipe, without photo views), each with its defect mask carried
through the same geometry (`line_views.line_view`). The frozen EfficientNet-Lite0
stage-5 trunk gives, per view, the shipped head's 464 pooled taps and a 10 × 10 map of
232 channels (stage 3 average-pooled 2 × 2, stages 4 and 5). A cell is a defect of the
view's class when its share of mask pixels is ≥ 0.1, else `free`; a photo without a
mask file gives its cells no loss. The cell classifier (232 → 128 → 6, defect cells
weighed 5 ×, 12 epochs) gives each view the per-class maximum and mean of its cells'
probabilities (12 features); the training views' features come from classifiers
trained on the other half of the photos (cross-fitting by photo), the validation
views' from one trained on all. Both heads: the shipped `train_head` (40 epochs,
batch 64, lr 1e-3, seed 0). Figures: the validation photos' canonical line views.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle import nn  # noqa: E402

from linewatch.pipeline.training import data, line_views  # noqa: E402
from linewatch.pipeline.training.efficientnet import PooledFeatures, TeacherHead  # noqa: E402
from linewatch.pipeline.training.metrics import class_report, recall_at_false_alarms  # noqa: E402
from linewatch.pipeline.training.nets import build_network  # noqa: E402
from linewatch.pipeline.training.static_runner import StaticRunner  # noqa: E402
from linewatch.pipeline.training.teacher import canonical_views, head_logits, train_head  # noqa: E402
from linewatch.pipeline.training.train import TrainConfig  # noqa: E402

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")
FREE = LABELS.index("free")
SIZE, GRID = 160, 10
DEFECT_SHARE = 0.1  # of a cell's pixels in the mask: the cell shows the defect
SPLIT = Path("models/linewatch-tile/split.json")


class SpatialTaps(nn.Layer):
    """The trunk's tapped maps at the last tap's 10 × 10 grid, concatenated."""

    def __init__(self, backbone: nn.Layer) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        stage3, stage4, stage5 = self.backbone.tap_maps(x)
        return paddle.concat([nn.functional.avg_pool2d(stage3, 2), stage4, stage5], axis=1)


def cached(run: Path, per_image: int) -> dict[str, np.ndarray]:
    """Views' maps (float16), pooled taps, cell shares, targets (`RUN/cache<k>.npz`)."""
    path = run / f"cache{per_image}.npz"
    if path.exists():
        with np.load(path) as stored:
            return dict(stored)
    split = data.Split.load(SPLIT)
    size = data.photo_cache_size(SIZE)
    targets = np.array([index for _, index in split.train])
    photos = data.load_images(split.train, size)
    masks = [data.load_mask(item, LABELS[i] == "free", size) for item, i in split.train]
    rng = np.random.default_rng([0, 11])
    views, shares, known = [], [], []
    for photo, mask in zip(photos, masks, strict=True):
        for _ in range(per_image):
            plain = mask if mask is not None else np.zeros_like(photo)
            view, view_mask = line_views.line_view(photo, SIZE, rng, mask=plain)
            views.append(view)
            cell = view_mask.astype(np.float32) / 255
            cell = cv2.resize(cell, (GRID, GRID), interpolation=cv2.INTER_AREA)
            shares.append(cell)
            known.append(mask is not None)
    network = build_network("EfficientNetLite0_s5", len(LABELS))
    network.backbone.load_torch_weights()
    spatial = StaticRunner.of(SpatialTaps(network.backbone), SIZE, run / "spatial")
    pooled = StaticRunner.of(PooledFeatures(network.backbone), SIZE, run / "pooled")
    val = canonical_views(data.load_images(split.val, size), SIZE)
    stack = np.stack(views)

    def run_all(runner: StaticRunner, grey: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [runner(data.to_batch(grey[s : s + 256])) for s in range(0, len(grey), 256)]
        )

    result = {
        "train_sp": run_all(spatial, stack).astype(np.float16),
        "train_po": run_all(pooled, stack),
        "val_sp": run_all(spatial, val).astype(np.float16),
        "val_po": run_all(pooled, val),
        "cells": np.stack(shares),
        "known": np.array(known),
        "targets": np.repeat(targets, per_image),
        "photo": np.repeat(np.arange(len(targets)), per_image),
        "val_targets": np.array([index for _, index in split.val]),
    }
    np.savez(path, **result)
    return result


class Cells:
    """Standardised cell vectors of the maps and the cells' targets."""

    def __init__(self, cache: dict[str, np.ndarray]) -> None:
        maps = cache["train_sp"]
        self.channels = maps.shape[1]
        sample = self._flat(maps[:2000].astype(np.float32))
        self.mean, self.std = sample.mean(0), sample.std(0) + 1e-3
        shares = cache["cells"].reshape(len(maps), -1)
        self.targets = np.where(shares >= DEFECT_SHARE, cache["targets"][:, None], FREE)

    def _flat(self, maps: np.ndarray) -> np.ndarray:
        return maps.transpose(0, 2, 3, 1).reshape(-1, self.channels)

    def of(self, maps: np.ndarray) -> np.ndarray:
        """[views, cells, channels] standardised."""
        flat = (self._flat(maps.astype(np.float32)) - self.mean) / self.std
        return flat.reshape(len(maps), GRID * GRID, self.channels)


def train_cells(cells: Cells, cache: dict, maps: np.ndarray, chosen: np.ndarray) -> nn.Layer:
    paddle.seed(0)
    net = nn.Sequential(
        nn.Dropout(0.2), nn.Linear(cells.channels, 128), nn.ReLU(), nn.Linear(128, len(LABELS))
    )
    rng, epochs, steps = np.random.default_rng(1), 12, len(chosen) // 64
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(1e-3, epochs * steps)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=net.parameters(), weight_decay=0.02
    )
    for _ in range(epochs):
        net.train()
        for batch in data.balanced_batches(cache["targets"][chosen], 64, steps, rng):
            views = chosen[batch]
            targets = cells.targets[views].reshape(-1)
            weight = np.where(targets != FREE, 5.0, 1.0) * np.repeat(cache["known"][views], 100)
            logits = net(paddle.to_tensor(cells.of(maps[views]).reshape(-1, cells.channels)))
            losses = nn.functional.cross_entropy(
                logits, paddle.to_tensor(targets.astype(np.int64)), reduction="none"
            ).squeeze(-1)
            loss = (losses * paddle.to_tensor(weight.astype(np.float32))).sum()
            (loss / max(1.0, weight.sum())).backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
    return net


def cell_features(net: nn.Layer, cells: Cells, maps: np.ndarray) -> np.ndarray:
    """Per view: the per-class maximum and mean of its cells' probabilities."""
    net.eval()
    out = []
    with paddle.no_grad():
        for start in range(0, len(maps), 256):
            probs = net(paddle.to_tensor(cells.of(maps[start : start + 256])))
            probs = nn.functional.softmax(probs, axis=-1).numpy()
            out.append(np.concatenate([probs.max(1), probs.mean(1)], axis=1))
    return np.concatenate(out)


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
    cells, maps = Cells(cache), cache["train_sp"]
    half = cache["photo"] % 2
    train_extra = np.zeros((len(maps), 2 * len(LABELS)), np.float32)
    for fold in (0, 1):
        net = train_cells(cells, cache, maps, np.flatnonzero(half != fold))
        train_extra[half == fold] = cell_features(net, cells, maps[half == fold])
    net = train_cells(cells, cache, maps, np.arange(len(maps)))
    val_extra = cell_features(net, cells, cache["val_sp"])
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
