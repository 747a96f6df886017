"""The teacher: ImageNet EfficientNet-Lite0 (frozen) + a head on its pooled features,
trained on line views of the training photos.

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
from linewatch.pipeline.training.efficientnet import LiteTeacher, PooledFeatures
from linewatch.pipeline.training.metrics import class_report
from linewatch.pipeline.training.static_runner import StaticRunner

POOL_FILE = "pool.npz"


def log(run_dir: Path, message: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    with (run_dir / "train.log").open("a") as out:
        out.write(line + "\n")


def make_pool(
    photos: np.ndarray, targets: np.ndarray, size: int, per_image: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`per_image` randomised line views of every photo: (views [N*k, size, size], targets)."""
    rng = np.random.default_rng([seed, 7])
    views = np.stack(
        [line_views.line_view(photo, size, rng)[0] for photo in photos for _ in range(per_image)]
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
    network: LiteTeacher,
    features: np.ndarray,
    targets: np.ndarray,
    val_features: np.ndarray,
    val_targets: np.ndarray,
    config,  # type: ignore[no-untyped-def]  (TrainConfig)
    labels: tuple[str, ...],
) -> dict:
    """Fixed-length training (no selection on validation): AdamW, cosine, label smoothing,
    square-root class balancing. Logs validation macro-F1 per epoch."""
    from linewatch.pipeline.training.train import smoothed_loss

    run_dir = Path(config.run_dir)
    head = network.head
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
    val_x = paddle.to_tensor(val_features.astype(np.float32))
    metrics: dict = {}
    for epoch in range(1, config.epochs + 1):
        head.train()
        losses = []
        for indices in data.balanced_batches(targets, config.batch_size, steps, rng):
            index = paddle.to_tensor(indices)
            logits = head(paddle.gather(train_x, index))
            labels_t = paddle.to_tensor(targets[indices].astype(np.int64))
            loss = smoothed_loss(logits, labels_t, len(labels), config.label_smoothing)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            losses.append(float(loss))
        head.eval()
        with paddle.no_grad():
            predicted = head(val_x).numpy().argmax(axis=1)
        report = class_report(val_targets, predicted, labels)
        metrics = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "val_macro_f1": report.macro_f1,
            "val_accuracy": report.accuracy,
            "time": time.time(),
        }
        with (run_dir / "metrics.jsonl").open("a") as out:
            out.write(json.dumps(metrics) + "\n")
        summary = f"loss {metrics['loss']:.3f} val macro-F1 {report.macro_f1:.3f}"
        log(run_dir, f"epoch {epoch}: {summary}")
    return metrics


def train_teacher(config) -> dict:  # type: ignore[no-untyped-def]  (TrainConfig)
    from linewatch.pipeline.training.train import prepare_run

    run_dir = Path(config.run_dir)
    split = prepare_run(config, resume=False)
    size = config.image_size
    cache = int(round(size * 256 / 224))
    targets = np.array([index for _, index in split.train])
    val_targets = np.array([index for _, index in split.val])
    log(run_dir, f"{len(split.train)} train / {len(split.val)} validation photos")
    views, view_targets = make_pool(
        data.load_images(split.train, cache), targets, size, config.views_per_image, config.seed
    )
    val_views = canonical_views(data.load_images(split.val, cache), size)
    log(run_dir, f"{len(views)} line views made")
    paddle.seed(config.seed)
    network = LiteTeacher(len(split.labels))
    if config.pretrained:
        network.backbone.load_torch_weights()
    runner = StaticRunner.of(
        PooledFeatures(network.backbone), size, run_dir / "backbone" / "features", config.threads
    )
    features = extract(runner, views, run_dir, "train features")
    val_features = extract(runner, val_views, run_dir, "validation features")
    metrics = train_head(
        network, features, view_targets, val_features, val_targets, config, split.labels
    )
    paddle.save(network.state_dict(), str(run_dir / "best.pdparams"))
    network.eval()
    with paddle.no_grad():
        logits = network.head(paddle.to_tensor(features.astype(np.float32))).numpy()
    np.savez(run_dir / POOL_FILE, views=views, targets=view_targets, logits=logits)
    log(run_dir, f"teacher saved; pool of {len(views)} views with teacher logits kept")
    return metrics
