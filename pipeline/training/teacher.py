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
from pathlib import Path

import numpy as np
import paddle

from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.efficientnet import PooledFeatures, TeacherHead
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
) -> tuple[np.ndarray, np.ndarray]:
    """`per_image` randomised views of every photo (line views with `jitter`, and photo
    views with probability `photo_share`): (views [N*k, size, size], targets)."""
    rng = np.random.default_rng([seed, 7])
    line_jitter = line_views.JITTERS[jitter]
    views = np.stack(
        [
            line_views.training_view(photo, size, rng, photo_share, line_jitter)
            for photo in photos
            for _ in range(per_image)
        ]
    )
    return views, np.repeat(targets, per_image)


def canonical_views(photos: np.ndarray, size: int) -> np.ndarray:
    return np.stack([line_views.canonical_view(photo, size) for photo in photos])


def extract(runner: StaticRunner, views: np.ndarray, run_dir: Path, what: str) -> np.ndarray:
    out, chunk, start = [], 256, time.time()
    for begin in range(0, len(views), chunk):
        out.append(runner(data.to_batch(views[begin : begin + chunk])))
        done = begin + len(out[-1])
        rate = done / max(1e-6, time.time() - start)
        log(run_dir, f"{what}: {done}/{len(views)} views, {rate:.1f} img/s")
    return np.concatenate(out)


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
    views, view_targets = make_pool(
        train_photos,
        targets,
        size,
        config.views_per_image,
        config.seed,
        config.photo_share,
        config.line_jitter,
    )
    val_views = canonical_views(data.load_images(split.val, cache), size)
    log(run_dir, f"{len(views)} line views made")
    paddle.seed(config.seed)
    network = build_network(config.arch, len(split.labels))
    if config.pretrained:
        network.backbone.load_torch_weights()
    runner = StaticRunner.of(
        PooledFeatures(network.backbone), size, run_dir / "backbone" / "features", config.threads
    )
    features = extract(runner, views, run_dir, "train features")
    val_features = extract(runner, val_views, run_dir, "validation features")
    if config.folds > 1:
        canonical = extract(runner, canonical_views(train_photos, size), run_dir, "train photos")
        view_photo = np.repeat(np.arange(len(targets)), config.views_per_image)
        oof, view_oof = out_of_fold_logits(
            features, view_photo, canonical, targets, config, split.labels
        )
        np.savez(
            run_dir / OOF_FILE,
            logits=oof,
            targets=targets,
            view_logits=view_oof,
            view_photo=view_photo,
        )
    metrics = train_head(
        network.head, features, view_targets, config, split.labels, (val_features, val_targets)
    )
    paddle.save(network.state_dict(), str(run_dir / "best.pdparams"))
    logits = head_logits(network.head, features)
    np.savez(run_dir / POOL_FILE, views=views, targets=view_targets, logits=logits)
    log(run_dir, f"teacher saved; pool of {len(views)} views with teacher logits kept")
    return metrics
