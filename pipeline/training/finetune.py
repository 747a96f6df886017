"""Fine-tuning EfficientNet-Lite0's trunk under the multi-tap head
(`linewatch train --arch EfficientNetLite0_s5 --finetune-from-block N`).

The stem and blocks 0..N-1 stay frozen; the weights of blocks N on train with the head
at `trunk_lr_scale` of the head's learning rate. Every trunk BN keeps its ImageNet
statistics (eval mode): only the head's batch norm tracks batch statistics. The head
standardises its pooled taps with a batch norm, so its input scaling follows the trunk
as it moves (a standardisation fixed before the trunk moved made an earlier attempt
diverge). The head starts from a frozen-trunk fit on cached features (a linear-probe
start: the trunk's first steps then follow a useful gradient, not a random head's).

An epoch is one fresh random view per training photo (square-root class balanced):
line views cut by the line's own crop code and, with `photo_share`, views as a person
uploads the photo. After the last epoch (no selection on validation) the calibration
slice of the training photos (held out of training, never validation) is scored, as
canonical line views and as `calibration_views` line views each, for the operating point
that `linewatch export` sets. A checkpoint after every epoch makes `--resume` continue.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import paddle
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.efficientnet import LiteTeacher, PooledFeatures
from linewatch.pipeline.training.metrics import class_report
from linewatch.pipeline.training.nets import build_network
from linewatch.pipeline.training.static_runner import StaticRunner
from linewatch.pipeline.training.teacher import (
    OOF_FILE,
    canonical_views,
    extract,
    log,
    make_pool,
    train_head,
)
from linewatch.pipeline.training.train import TrainConfig, prepare_run, smoothed_loss

CHECKPOINT = "last.pdckpt"
WEIGHTS = "best.pdparams"  # the last epoch's weights (the name export reads)
HEAD_WARMUP_EPOCHS = 20


class Finetuner:
    """The training loop: optimizer with a slower trunk, one epoch at a time, checkpoints."""

    def __init__(self, config: TrainConfig, network: LiteTeacher, labels: tuple[str, ...]):
        self.config = config
        self.network = network
        self.labels = labels
        self.run_dir = Path(config.run_dir)
        self.rng = np.random.default_rng([config.seed, 11])
        self.jitter = line_views.JITTERS[config.line_jitter]
        self.epoch = 0
        self.steps = 0  # steps per epoch, set by `fit`
        for param in network.trunk_parameters():
            param.optimize_attr["learning_rate"] = config.trunk_lr_scale
        self.optimizer: paddle.optimizer.AdamW | None = None

    def _make_optimizer(self, steps: int) -> None:
        c = self.config
        total = max(1, c.epochs * steps)
        warmup = min(steps, total - 1) if total > 1 else 1
        cosine = paddle.optimizer.lr.CosineAnnealingDecay(c.lr, max(1, total - warmup))
        self.schedule = paddle.optimizer.lr.LinearWarmup(cosine, max(1, warmup), 0.0, c.lr)
        trainable = self.network.head.parameters() + self.network.trunk_parameters()
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=self.schedule,
            parameters=[p for p in trainable if not p.stop_gradient],
            weight_decay=c.weight_decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(c.grad_clip),
        )

    def fit(
        self,
        photos: np.ndarray,
        targets: np.ndarray,
        calibration: tuple[np.ndarray, np.ndarray],
        stop_after: int | None = None,
    ) -> dict:
        """Train the remaining epochs (at most `stop_after` in this call); `calibration`:
        (canonical views, targets) of the held-out photos, logged per epoch."""
        self.steps = max(1, math.ceil(len(photos) / self.config.batch_size))
        if self.optimizer is None:
            self._make_optimizer(self.steps)
        metrics: dict = {}
        with _progress() as progress:
            per_epoch = self.steps * self.config.batch_size
            task = progress.add_task(
                "fine-tune", total=self.config.epochs * per_epoch, completed=self.epoch * per_epoch
            )
            tick = lambda: progress.advance(task, self.config.batch_size)  # noqa: E731
            last = self.config.epochs if stop_after is None else self.epoch + stop_after
            while self.epoch < min(last, self.config.epochs):
                start = time.time()
                loss, accuracy = self.train_epoch(photos, targets, tick)
                metrics = self._epoch_metrics(loss, accuracy, time.time() - start, calibration)
                self.save()
        return metrics

    def train_epoch(
        self, photos: np.ndarray, targets: np.ndarray, tick: Callable[[], None] | None = None
    ) -> tuple[float, float]:
        """One view per photo (balanced draws); returns the mean loss and accuracy."""
        c = self.config
        self.network.train()
        losses, hits = [], 0
        for indices in data.balanced_batches(targets, c.batch_size, self.steps, self.rng):
            views = np.stack(
                [
                    line_views.training_view(
                        photos[i], c.image_size, self.rng, c.photo_share, self.jitter
                    )
                    for i in indices
                ]
            )
            loss, predicted = self._step(views, targets[indices])
            losses.append(loss)
            hits += int((predicted == targets[indices]).sum())
            if tick is not None:
                tick()
        self.epoch += 1
        return float(np.mean(losses)), hits / (self.steps * c.batch_size)

    def _step(self, views: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        assert self.optimizer is not None
        logits = self.network(paddle.to_tensor(data.to_batch(views)))
        labels = paddle.to_tensor(targets.astype(np.int64))
        loss = smoothed_loss(logits, labels, len(self.labels), self.config.label_smoothing)
        loss.backward()
        self.optimizer.step()
        self.optimizer.clear_grad()
        self.schedule.step()
        return float(loss), logits.numpy().argmax(axis=1)

    def _epoch_metrics(
        self,
        loss: float,
        accuracy: float,
        seconds: float,
        calibration: tuple[np.ndarray, np.ndarray],
    ) -> dict:
        views, targets = calibration
        metrics = {
            "epoch": self.epoch,
            "loss": loss,
            "train_accuracy": accuracy,
            "views_per_s": self.steps * self.config.batch_size / max(seconds, 1e-6),
            "seconds": seconds,
            "lr": float(self.optimizer.get_lr()) if self.optimizer else 0.0,
            "time": time.time(),
        }
        if len(views):  # logged for the record; nothing is chosen by it
            predicted = predict_logits_dygraph(self.network, views).argmax(axis=1)
            metrics["calibration_macro_f1"] = class_report(targets, predicted, self.labels).macro_f1
        with (self.run_dir / "metrics.jsonl").open("a") as out:
            out.write(json.dumps(metrics) + "\n")
        log(self.run_dir, epoch_line(metrics, self.config.epochs))
        return metrics

    def save(self) -> None:
        assert self.optimizer is not None
        state = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": self.rng.bit_generator.state,
            "paddle_rng": paddle.get_rng_state(),  # dropout: a resumed run draws the same
            "epoch": self.epoch,
        }
        paddle.save(state, str(self.run_dir / CHECKPOINT))
        paddle.save(self.network.state_dict(), str(self.run_dir / WEIGHTS))

    def resume(self, steps: int) -> None:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            raise LinewatchError(f"nothing to resume: {path} does not exist")
        state = paddle.load(str(path))
        self.network.set_state_dict(state["network"])
        self.steps = steps
        self._make_optimizer(steps)
        assert self.optimizer is not None
        self.optimizer.set_state_dict(state["optimizer"])
        self.schedule.set_state_dict(state["schedule"])
        self.rng.bit_generator.state = state["rng"]
        if "paddle_rng" in state:
            paddle.set_rng_state(state["paddle_rng"])
        self.epoch = int(state["epoch"])


def epoch_line(metrics: dict, epochs: int) -> str:
    """The progress line written to the run's train.log after every epoch."""
    remaining = (epochs - metrics["epoch"]) * metrics["seconds"]
    calibration = metrics.get("calibration_macro_f1")
    return (
        f"epoch {metrics['epoch']}/{epochs}: loss {metrics['loss']:.3f} "
        f"train acc {metrics['train_accuracy']:.3f}"
        + (f" calibration macro-F1 {calibration:.3f}" if calibration is not None else "")
        + f" | {metrics['views_per_s']:.1f} views/s, {metrics['seconds']:.0f} s/epoch, "
        f"ETA {remaining / 60:.1f} min"
    )


class ViewsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f} views/s")


def _progress() -> Progress:
    """A live bar (views, views/s, ETA) when attached to a terminal; silent when detached
    (the per-epoch line in train.log is the record then)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("views"),
        ViewsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (console.is_terminal and sys.stderr.isatty()),
    )


def predict_logits_dygraph(network: paddle.nn.Layer, views: np.ndarray) -> np.ndarray:
    network.eval()
    with paddle.no_grad():
        out = [
            network(paddle.to_tensor(data.to_batch(views[i : i + 64]))).numpy()
            for i in range(0, len(views), 64)
        ]
    return np.concatenate(out)


def warm_start_head(
    network: LiteTeacher,
    photos: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    labels: tuple[str, ...],
) -> None:
    """Fit the head on the frozen ImageNet trunk's features of a few views per photo
    (cheap: the trunk runs in Paddle Inference) before the trunk starts to move."""
    if config.head_warmup_views <= 0:
        return
    run_dir = Path(config.run_dir)
    views, view_targets, _ = make_pool(
        photos,
        targets,
        config.image_size,
        config.head_warmup_views,
        config.seed,
        config.photo_share,
        config.line_jitter,
    )
    runner = StaticRunner.of(
        PooledFeatures(network.backbone),
        config.image_size,
        run_dir / "backbone" / "features",
        config.threads,
    )
    features = extract(runner, views, run_dir, "head start features")
    # Its optimizer's accumulator names in a guard of their own: the fine-tune's then get
    # the same names as in a resumed process that skips this step.
    with paddle.utils.unique_name.guard():
        train_head(
            network.head, features, view_targets, replace(config, epochs=HEAD_WARMUP_EPOCHS), labels
        )
    log(run_dir, f"head fitted on {len(views)} frozen-trunk views")


def score_calibration(
    network: LiteTeacher, photos: np.ndarray, targets: np.ndarray, config: TrainConfig
) -> None:
    """Held-out logits of the calibration photos (canonical line views and
    `calibration_views` line views each) in `out_of_fold.npz`, for the operating point."""
    run_dir = Path(config.run_dir)
    runner = StaticRunner.of(
        network, config.image_size, run_dir / "calibration" / "network", config.threads
    )
    size = config.image_size
    rng = np.random.default_rng([config.seed, 13])
    per, jitter = config.calibration_views, line_views.JITTERS[config.line_jitter]
    views = np.stack(
        [line_views.line_view(p, size, rng, jitter=jitter)[0] for p in photos for _ in range(per)]
    )
    np.savez(
        run_dir / OOF_FILE,
        logits=runner(data.to_batch(canonical_views(photos, size))),
        targets=targets,
        view_logits=extract(runner, views, run_dir, "calibration views"),
        view_photo=np.repeat(np.arange(len(photos)), per),
        source=f"calibration slice ({len(photos)} training photos held out of training)",
    )


def train_finetune(
    config: TrainConfig, resume: bool = False, stop_after: int | None = None
) -> dict:
    """Fine-tune (or resume), save the last epoch's weights, score the calibration slice
    once the last epoch is done. `stop_after`: train at most this many epochs now (the
    checkpoint lets `resume` go on later)."""
    run_dir = Path(config.run_dir)
    split = prepare_run(config, resume)
    cache = data.photo_cache_size(config.image_size)
    photos = data.load_images(split.train, cache)
    targets = np.array([index for _, index in split.train])
    calibration = data.load_images(split.calibration, cache) if split.calibration else None
    cal_targets = np.array([index for _, index in split.calibration], np.int64)
    log(run_dir, f"{len(photos)} train / {len(cal_targets)} calibration photos")
    paddle.seed(config.seed)
    with paddle.utils.unique_name.guard():
        network = build_network(config.arch, len(split.labels), config.finetune_from_block)
        tuner = Finetuner(config, network, split.labels)
        if resume and (run_dir / CHECKPOINT).exists():
            tuner.resume(max(1, math.ceil(len(photos) / config.batch_size)))
            log(run_dir, f"resumed after epoch {tuner.epoch}")
        else:
            if config.pretrained:
                network.backbone.load_torch_weights()
            warm_start_head(network, photos, targets, config, split.labels)
        cal_views = (
            canonical_views(calibration, config.image_size)
            if calibration is not None
            else np.zeros((0, config.image_size, config.image_size), np.uint8)
        )
        metrics = tuner.fit(photos, targets, (cal_views, cal_targets), stop_after)
    if tuner.epoch < config.epochs:
        log(run_dir, f"stopped after epoch {tuner.epoch} of {config.epochs}; --resume goes on")
        return metrics
    if calibration is not None:
        score_calibration(network, calibration, cal_targets, config)
    log(run_dir, f"fine-tune done after {tuner.epoch} epochs; weights in {run_dir / WEIGHTS}")
    return metrics
