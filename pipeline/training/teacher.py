"""EfficientNet-Lite0 heads: an ImageNet trunk (frozen; the whole network — the teacher —
or cut after stage 4 or 5, as the shipped CPU model) + a head on its pooled features,
trained on line views of the training photos.

With `--folds k`, heads trained on k-1 folds of the training photos score the canonical
view of the photos left out; those held-out logits (`out_of_fold.npz`) set the operating
point at export, so the validation photos only measure it.

Every training photo gives `views_per_image` randomised line views (belt, crop_view,
jitter, blur, noise, drift, JPEG); the frozen backbone's pooled multi-stage features of
each view are computed once by Paddle Inference and the head is trained on them. The
views and the teacher's logits on them are kept in the run folder (`pool.npz`) so the
student is distilled on exactly what the teacher saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.cell_features import (
    CellSettings,
    CellViews,
    cell_features,
    cell_targets,
    cross_fitted,
)
from linewatch.pipeline.training.efficientnet import PooledAndGrid, PooledFeatures, TeacherHead
from linewatch.pipeline.training.metrics import class_report
from linewatch.pipeline.training.nets import build_network
from linewatch.pipeline.training.static_runner import StaticRunner

POOL_FILE = "pool.npz"
OOF_FILE = "out_of_fold.npz"  # held-out logits of the training photos (--folds)
FOLD_HEADS = "fold_heads"  # fold{k}.pdparams: the heads behind those logits (--folds)


def log(run_dir: Path, message: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    with (run_dir / "train.log").open("a") as out:
        out.write(line + "\n")


def make_pool(
    photos: np.ndarray,
    targets: np.ndarray,
    size: int,
    per_image: int,
    seed: int,
    photo_share: float = 0.0,
    jitter: str = "default",
    masks: list[np.ndarray | None] | None = None,
    cells: Callable[[np.ndarray | None, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`per_image` randomised views of every photo (line views with `jitter`, and photo
    views with probability `photo_share`): (views [N*k, size, size], targets, and with
    `cells` each view's cells(view mask, class) stacked, else None). The masks follow
    the views; the views are the same with or without them."""
    rng = np.random.default_rng([seed, 7])
    line_jitter = line_views.JITTERS[jitter]
    views, view_cells = [], []
    for photo, mask, target in zip(photos, masks or [None] * len(photos), targets, strict=True):
        for _ in range(per_image):
            view, view_mask = line_views.masked_training_view(
                photo, size, rng, photo_share, line_jitter, mask
            )
            views.append(view)
            if cells is not None:
                view_cells.append(cells(view_mask, int(target)))
    stacked_cells = np.stack(view_cells) if cells is not None else None
    return np.stack(views), np.repeat(targets, per_image), stacked_cells


def run_pool(
    config,  # type: ignore[no-untyped-def]  (TrainConfig)
    photos: np.ndarray,
    targets: np.ndarray,
    masks: list[np.ndarray | None] | None = None,
    cells: Callable[[np.ndarray | None, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`make_pool` with the run's size, views per photo, seed, photo share and jitter."""
    return make_pool(
        photos,
        targets,
        config.image_size,
        config.views_per_image,
        config.seed,
        config.photo_share,
        config.line_jitter,
        masks=masks,
        cells=cells,
    )


def canonical_views(photos: np.ndarray, size: int) -> np.ndarray:
    return np.stack([line_views.canonical_view(photo, size) for photo in photos])


def extract(runner: StaticRunner, views: np.ndarray, run_dir: Path, what: str) -> np.ndarray:
    """The runner's first output for every view, with progress lines."""
    return extract_all(runner, views, run_dir, what)[0]


def extract_all(
    runner: StaticRunner, views: np.ndarray, run_dir: Path, what: str
) -> list[np.ndarray]:
    """Every output of the runner for every view; maps (more than 2 dimensions) kept
    as float16, which halves the memory a pool of 80 views per photo needs."""
    out, chunk, start = [], 256, time.time()
    for begin in range(0, len(views), chunk):
        outputs = runner.outputs(data.to_batch(views[begin : begin + chunk]))
        out.append([o.astype(np.float16) if o.ndim > 2 else o for o in outputs])
        done = begin + len(outputs[0])
        rate = done / max(1e-6, time.time() - start)
        log(run_dir, f"{what}: {done}/{len(views)} views, {rate:.1f} img/s")
    return [np.concatenate(parts) for parts in zip(*out, strict=True)]


def train_head(
    head: TeacherHead,
    features: np.ndarray,
    targets: np.ndarray,
    config,  # type: ignore[no-untyped-def]  (TrainConfig)
    labels: tuple[str, ...],
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Fixed-length training (no selection on validation): AdamW, cosine, label smoothing,
    square-root class balancing. With `val` (features, targets), logs its macro-F1 per
    epoch (for the record: nothing is chosen by it)."""
    from linewatch.pipeline.training.train import smoothed_loss

    head.set_standardisation(features)
    rng = np.random.default_rng(config.seed)
    paddle.seed(config.seed)
    steps = max(1, len(features) // config.batch_size)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(config.lr, config.epochs * steps)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=[p for p in head.parameters() if not p.stop_gradient],
        weight_decay=config.weight_decay,
    )
    train_x = paddle.to_tensor(features.astype(np.float32))
    metrics: dict = {}
    for epoch in range(1, config.epochs + 1):
        head.train()
        losses = []
        for indices in data.balanced_batches(targets, config.batch_size, steps, rng):
            logits = head(paddle.gather(train_x, paddle.to_tensor(indices)))
            labels_t = paddle.to_tensor(targets[indices].astype(np.int64))
            loss = smoothed_loss(logits, labels_t, len(labels), config.label_smoothing)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            losses.append(float(loss))
        if val is not None:
            metrics = _log_epoch(head, val, labels, Path(config.run_dir), epoch, losses)
    return metrics


def head_logits(head: TeacherHead, features: np.ndarray) -> np.ndarray:
    head.eval()
    with paddle.no_grad():
        return head(paddle.to_tensor(features.astype(np.float32))).numpy()


def _log_epoch(
    head: TeacherHead,
    val: tuple[np.ndarray, np.ndarray],
    labels: tuple[str, ...],
    run_dir: Path,
    epoch: int,
    losses: list[float],
) -> dict:
    predicted = head_logits(head, val[0]).argmax(axis=1)
    report = class_report(val[1], predicted, labels)
    metrics = {
        "epoch": epoch,
        "loss": float(np.mean(losses)),
        "val_macro_f1": report.macro_f1,
        "val_accuracy": report.accuracy,
        "time": time.time(),
    }
    with (run_dir / "metrics.jsonl").open("a") as out:
        out.write(json.dumps(metrics) + "\n")
    log(run_dir, f"epoch {epoch}: loss {metrics['loss']:.3f} val macro-F1 {report.macro_f1:.3f}")
    return metrics


def photo_folds(targets: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per photo, stratified by class (each class dealt round the folds)."""
    rng = np.random.default_rng([seed, 9])
    fold = np.zeros(len(targets), np.int64)
    for label in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == label))
        fold[members] = np.arange(len(members)) % folds
    return fold


def out_of_fold_logits(
    features: np.ndarray,
    view_photo: np.ndarray,
    canonical: np.ndarray,
    targets: np.ndarray,
    config,  # type: ignore[no-untyped-def]  (TrainConfig)
    labels: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of each training photo's canonical view, and of each of its line views,
    from a head trained without that photo's fold (k-fold cross-fitting): held-out scores
    for the operating point that no validation photo has seen."""
    fold = photo_folds(targets, config.folds, config.seed)
    view_targets = targets[view_photo]
    logits = np.zeros((len(targets), len(labels)), np.float32)
    view_logits = np.zeros((len(view_photo), len(labels)), np.float32)
    for k in range(config.folds):
        keep = fold[view_photo] != k
        head = TeacherHead(len(labels), features.shape[1])
        train_head(head, features[keep], view_targets[keep], config, labels)
        logits[fold == k] = head_logits(head, canonical[fold == k])
        view_logits[~keep] = head_logits(head, features[~keep])
        save_fold_head(head, Path(config.run_dir), k)
        log(Path(config.run_dir), f"fold {k + 1}/{config.folds} scored")
    return logits, view_logits


def fold_head_file(run_dir: Path, fold: int) -> Path:
    return run_dir / FOLD_HEADS / f"fold{fold}.pdparams"


def save_fold_head(head: TeacherHead, run_dir: Path, fold: int) -> None:
    """Kept so a quantised copy of the model can be scored on held-out views later."""
    path = fold_head_file(run_dir, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(head.state_dict(), str(path))


@dataclass(frozen=True)
class HeadInputs:
    """What the head trains on: its input for every training view, for the validation
    photos' canonical views, and (with `--folds`) for the training photos' canonical
    views."""

    views: np.ndarray
    val: np.ndarray
    canonical: np.ndarray | None


def train_teacher(config) -> dict:  # type: ignore[no-untyped-def]  (TrainConfig)
    from linewatch.pipeline.training.train import prepare_run

    run_dir = Path(config.run_dir)
    split = prepare_run(config, resume=False)
    size = config.image_size
    cache = data.photo_cache_size(size)
    targets = np.array([index for _, index in split.train])
    val_targets = np.array([index for _, index in split.val])
    log(run_dir, f"{len(split.train)} train / {len(split.val)} validation photos")
    train_photos = data.load_images(split.train, cache)
    paddle.seed(config.seed)
    network = build_network(config.arch, len(split.labels), cell_features=config.cell_features)
    if config.pretrained:
        network.backbone.load_torch_weights()
    val = canonical_views(data.load_images(split.val, cache), size)
    if config.cell_features:
        views, view_targets, inputs = cell_feature_inputs(config, split, network, train_photos, val)
    else:
        views, view_targets, _ = run_pool(config, train_photos, targets)
        log(run_dir, f"{len(views)} line views made")
        inputs = pooled_inputs(config, network, views, train_photos, val)
    if inputs.canonical is not None:
        view_photo = np.repeat(np.arange(len(targets)), config.views_per_image)
        oof, view_oof = out_of_fold_logits(
            inputs.views, view_photo, inputs.canonical, targets, config, split.labels
        )
        np.savez(
            run_dir / OOF_FILE,
            logits=oof,
            targets=targets,
            view_logits=view_oof,
            view_photo=view_photo,
        )
    metrics = train_head(
        network.head, inputs.views, view_targets, config, split.labels, (inputs.val, val_targets)
    )
    paddle.save(network.state_dict(), str(run_dir / "best.pdparams"))
    logits = head_logits(network.head, inputs.views)
    np.savez(run_dir / POOL_FILE, views=views, targets=view_targets, logits=logits)
    log(run_dir, f"teacher saved; pool of {len(views)} views with teacher logits kept")
    return metrics


def pooled_inputs(
    config,  # type: ignore[no-untyped-def]  (TrainConfig)
    network: paddle.nn.Layer,
    views: np.ndarray,
    train_photos: np.ndarray,
    val: np.ndarray,
) -> HeadInputs:
    """The frozen trunk's pooled taps, by Paddle Inference."""
    run_dir, size = Path(config.run_dir), config.image_size
    runner = StaticRunner.of(
        PooledFeatures(network.backbone), size, run_dir / "backbone" / "features", config.threads
    )
    canonical = None
    if config.folds > 1:
        canonical = extract(runner, canonical_views(train_photos, size), run_dir, "train photos")
    return HeadInputs(
        extract(runner, views, run_dir, "train features"),
        extract(runner, val, run_dir, "validation features"),
        canonical,
    )


def cell_feature_inputs(
    config,  # type: ignore[no-untyped-def]  (TrainConfig)
    split: data.Split,
    network: paddle.nn.Layer,
    train_photos: np.ndarray,
    val: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, HeadInputs]:
    """The views (their masks carried along), and the head's inputs: pooled taps and
    cross-fitted cell features; the network's cell head is trained here."""
    from linewatch.pipeline.training.train import NORMAL_LABEL

    run_dir, size = Path(config.run_dir), config.image_size
    if NORMAL_LABEL not in split.labels:
        raise LinewatchError(f"--cell-features needs a {NORMAL_LABEL!r} class (defect-free)")
    normal = split.labels.index(NORMAL_LABEL)
    grid = size // network.backbone.trunk.grid_stride
    cache = data.photo_cache_size(size)
    masks = [data.load_mask(item, index == normal, cache) for item, index in split.train]
    log(run_dir, f"{sum(m is not None for m in masks)}/{len(masks)} photos have a defect mask")
    targets = np.array([index for _, index in split.train])
    views, view_targets, view_cells = run_pool(
        config,
        train_photos,
        targets,
        masks=masks,
        cells=lambda mask, label: cell_targets(mask, label, normal, grid),
    )
    log(run_dir, f"{len(views)} line views made, with their {grid} x {grid} cells")
    runner = StaticRunner.of(
        PooledAndGrid(network.backbone), size, run_dir / "backbone" / "grid", config.threads
    )
    pooled, grids = extract_all(runner, views, run_dir, "train features")
    val_pooled, val_grids = extract_all(runner, val, run_dir, "validation features")
    canonical_pooled, canonical_grids = (
        extract_all(runner, canonical_views(train_photos, size), run_dir, "train photos")
        if config.folds > 1
        else (None, None)
    )
    cell_views = CellViews(
        grids, view_cells, view_targets, np.repeat(np.arange(len(targets)), config.views_per_image)
    )
    settings = CellSettings(
        len(split.labels), normal, defect_weight=config.defect_cell_weight, seed=config.seed
    )
    extra, canonical_extra, network.cells = cross_fitted(
        cell_views,
        photo_folds(targets, 2, config.seed),
        settings,
        canonical_grids,
        progress=lambda line: log(run_dir, line),
    )
    canonical = None
    if canonical_pooled is not None:
        canonical = np.c_[canonical_pooled, canonical_extra]
    inputs = HeadInputs(
        np.c_[pooled, extra], np.c_[val_pooled, cell_features(network.cells, val_grids)], canonical
    )
    return views, view_targets, inputs
