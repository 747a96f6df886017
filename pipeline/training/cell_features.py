"""Mask-supervised cell features for a frozen-trunk Lite0 head (`linewatch train
--cell-features`).

A `CellHead` on the trunk's maps on one grid learns from the dataset's defect masks
which cells of a view show a defect of which class; each class's highest and mean cell
probability are 2 × classes more features for the head. The training views' cell
features come from cell heads trained on the other half of the photos (cross-fitting by
photo), so the head learns from features like those of a photo the cell head never
saw; the exported network carries the cell head trained on all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import paddle

from linewatch.pipeline.training import data
from linewatch.pipeline.training.efficientnet import CellHead

DEFECT_SHARE = 0.1  # of a cell's pixels in the mask: the cell shows the view's defect
UNKNOWN = -1  # a cell of a view without a mask (no file, or a photo view): no loss
EPOCH_VIEWS_PER_PHOTO = 20  # an epoch of the cell head: at most this many views per photo
STANDARDISATION_VIEWS = 2000
BATCH_VIEWS = 64


def cell_targets(view_mask: np.ndarray | None, label: int, normal: int, grid: int) -> np.ndarray:
    """[grid * grid] int8: `label` where ≥ DEFECT_SHARE of the cell is defect, `normal`
    elsewhere; UNKNOWN everywhere without a mask."""
    if view_mask is None:
        return np.full(grid * grid, UNKNOWN, np.int8)
    share = cv2.resize(
        view_mask.astype(np.float32) / 255, (grid, grid), interpolation=cv2.INTER_AREA
    )
    return np.where(share.reshape(-1) >= DEFECT_SHARE, label, normal).astype(np.int8)


@dataclass(frozen=True)
class CellViews:
    grids: np.ndarray  # [views, channels, g, g] float16: the trunk's maps on one grid
    targets: np.ndarray  # [views, g * g] int8 (cell_targets)
    labels: np.ndarray  # [views] the view's class
    photo: np.ndarray  # [views] its photo


@dataclass(frozen=True)
class CellSettings:
    classes: int
    normal: int
    epochs: int = 12
    defect_weight: float = 5.0  # defect cells are rare: weigh them up
    lr: float = 1e-3
    weight_decay: float = 0.02
    seed: int = 0


def train_cell_head(
    views: CellViews,
    chosen: np.ndarray,
    settings: CellSettings,
    progress: Callable[[str], None] = print,
) -> CellHead:
    """A cell head trained on the views `chosen` (balanced by the view's class)."""
    paddle.seed(settings.seed)
    rng = np.random.default_rng([settings.seed, 13])
    head = CellHead(settings.classes, views.grids.shape[1])
    sample = rng.choice(chosen, min(len(chosen), STANDARDISATION_VIEWS), replace=False)
    head.set_standardisation(_cells(views.grids[np.sort(sample)]))
    photos = len(np.unique(views.photo[chosen]))
    steps = max(1, min(len(chosen), EPOCH_VIEWS_PER_PHOTO * photos) // BATCH_VIEWS)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(settings.lr, settings.epochs * steps)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=head.parameters(), weight_decay=settings.weight_decay
    )
    for epoch in range(1, settings.epochs + 1):
        head.train()
        losses = []
        for batch in data.balanced_batches(views.labels[chosen], BATCH_VIEWS, steps, rng):
            picked = chosen[batch]
            loss = _loss(head, views.grids[picked], views.targets[picked], settings)
            if loss is None:
                continue
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            losses.append(float(loss))
        progress(f"cell head epoch {epoch}/{settings.epochs}: loss {np.mean(losses or [0]):.3f}")
    head.eval()
    return head


def _cells(grids: np.ndarray) -> np.ndarray:
    """[views, channels, g, g] -> cell vectors [views * g * g, channels]."""
    return grids.astype(np.float32).transpose(0, 2, 3, 1).reshape(-1, grids.shape[1])


def _loss(
    head: CellHead, grids: np.ndarray, targets: np.ndarray, settings: CellSettings
) -> paddle.Tensor | None:
    flat = targets.reshape(-1).astype(np.int64)
    weight = np.where(
        flat == UNKNOWN, 0.0, np.where(flat == settings.normal, 1.0, settings.defect_weight)
    )
    if weight.sum() == 0:
        return None
    logits = head.cell_logits(paddle.to_tensor(grids.astype(np.float32)))
    losses = paddle.nn.functional.cross_entropy(
        logits.reshape([-1, settings.classes]),
        paddle.to_tensor(np.maximum(flat, 0)),
        reduction="none",
    ).reshape([-1])
    return (losses * paddle.to_tensor(weight.astype(np.float32))).sum() / float(weight.sum())


def cell_features(head: CellHead, grids: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The head's output (each class's max and mean cell probability) for every view."""
    head.eval()
    out = []
    with paddle.no_grad():
        for start in range(0, len(grids), chunk):
            batch = paddle.to_tensor(grids[start : start + chunk].astype(np.float32))
            out.append(head(batch).numpy())
    if not out:
        return np.zeros((0, 2 * head.net[-1].weight.shape[1]), np.float32)
    return np.concatenate(out)


def cross_fitted(
    views: CellViews,
    half: np.ndarray,
    settings: CellSettings,
    photo_grids: np.ndarray | None = None,
    progress: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray | None, CellHead]:
    """The training views' cell features (and those of `photo_grids`, one per photo),
    each from the cell head trained on the other `half` (0/1 per photo) of the photos;
    and the cell head trained on all of them, for the network."""
    extra = np.zeros((len(views.grids), 2 * settings.classes), np.float32)
    photo_extra = (
        None if photo_grids is None else np.zeros((len(photo_grids), extra.shape[1]), np.float32)
    )
    for side in (0, 1):
        progress(f"cell head {side + 1}/3: trained on the other half of the photos")
        mine = half[views.photo] == side
        head = train_cell_head(views, np.flatnonzero(~mine), settings, progress)
        extra[mine] = cell_features(head, views.grids[mine])
        if photo_grids is not None and photo_extra is not None:
            photo_extra[half == side] = cell_features(head, photo_grids[half == side])
    progress("cell head 3/3: trained on every photo (the network's)")
    return (
        extra,
        photo_extra,
        train_cell_head(views, np.arange(len(views.grids)), settings, progress),
    )
