"""Distil a teacher run into a small student (PP-LCNet) on the teacher's line views.

The teacher run keeps its randomised line views and its logits on them (`pool.npz`); the
student trains on those views (plus flips) with the loss

    w * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - w) * CE_smooth(label)

(Hinton et al., 2015), with the trainer's EMA, warmup + cosine schedule and checkpoints,
validated on the canonical line views of the same validation photos as the teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training import data
from linewatch.pipeline.training.nets import load_exported_weights
from linewatch.pipeline.training.static_runner import StaticRunner
from linewatch.pipeline.training.teacher import POOL_FILE, canonical_views, extract, log
from linewatch.pipeline.training.train import (
    TrainConfig,
    Trainer,
    _progress,
    _status,
    prepare_run,
    smoothed_loss,
)


def distill_loss(
    student: paddle.Tensor,
    teacher: paddle.Tensor,
    labels: paddle.Tensor,
    temperature: float,
    weight: float,
    smoothing: float,
) -> paddle.Tensor:
    classes = student.shape[1]
    soft = paddle.nn.functional.softmax(teacher / temperature, axis=1)
    log_student = paddle.nn.functional.log_softmax(student / temperature, axis=1)
    kl = (soft * (paddle.log(soft + 1e-8) - log_student)).sum(axis=1).mean()
    hard = smoothed_loss(student, labels, classes, smoothing)
    return weight * temperature**2 * kl + (1 - weight) * hard


class DistillTrainer(Trainer):
    def __init__(self, config: TrainConfig, split: data.Split, pool: dict) -> None:
        super().__init__(config, split)
        self.pool = pool
        if config.init_from_model and not config.init_from:
            count = load_exported_weights(self.network, Path(config.init_from_model))
            log(Path(config.run_dir), f"warm start: {count} tensors from {config.init_from_model}")
            self.ema.shadow = {k: v.numpy().copy() for k, v in self.network.state_dict().items()}
        self.trunk_out: np.ndarray | None = None
        self.val_trunk_out: np.ndarray | None = None

    def freeze_trunk(self, val_views: np.ndarray) -> None:
        """Run the frozen stages once per view with Paddle Inference; train the rest."""
        stages, run_dir = self.config.frozen_stages, Path(self.config.run_dir)
        trunk = self.network.trunk(stages)
        for param in trunk.parameters():
            param.stop_gradient = True
        runner = StaticRunner.of(
            trunk, self.config.image_size, run_dir / "trunk" / "trunk", self.config.threads
        )
        self.trunk_out = extract(runner, self.pool["views"], run_dir, "student trunk").astype(
            np.float16
        )
        self.val_trunk_out = extract(runner, val_views, run_dir, "validation trunk")

    def _student_logits(self, indices: np.ndarray) -> paddle.Tensor:
        if self.trunk_out is not None:
            inputs = paddle.to_tensor(self.trunk_out[indices].astype(np.float32))
            return self.network.forward_from(inputs, self.config.frozen_stages)
        images = self.pool["views"][indices]
        flip_h = self.rng.random(len(indices)) < 0.5
        images = np.where(flip_h[:, None, None], images[:, :, ::-1], images)
        return self.network(paddle.to_tensor(data.to_batch(images)))

    def _predict_val(self, grey: np.ndarray) -> np.ndarray:
        if self.val_trunk_out is None:
            return super()._predict_val(grey)
        self.network.eval()
        with paddle.no_grad():
            inputs = paddle.to_tensor(self.val_trunk_out.astype(np.float32))
            logits = self.network.forward_from(inputs, self.config.frozen_stages)
            return paddle.nn.functional.softmax(logits, axis=1).numpy()

    def fit_pool(self, val_views: np.ndarray) -> dict:
        val_targets = np.array([index for _, index in self.split.val])
        best: dict = {}
        with _progress() as progress:
            task = progress.add_task(
                "distilling", total=self.config.epochs, completed=self.epoch, status=""
            )
            while self.epoch < self.config.epochs and self.stale_epochs < self.config.patience:
                loss = self._pool_epoch()
                metrics = self._validate(val_views, val_targets, loss)
                best = metrics if metrics["improved"] else best
                progress.update(task, advance=1, status=_status(metrics, self.best_f1))
                log(
                    Path(self.config.run_dir),
                    f"epoch {self.epoch}: {_status(metrics, self.best_f1)}",
                )
        return best

    def _pool_epoch(self) -> float:
        c = self.config
        targets, logits = self.pool["targets"], self.pool["logits"]
        self.network.train()
        losses = []
        for indices in data.balanced_batches(targets, c.batch_size, c.steps_per_epoch, self.rng):
            student = self._student_logits(indices)
            loss = distill_loss(
                student,
                paddle.to_tensor(logits[indices].astype(np.float32)),
                paddle.to_tensor(targets[indices].astype(np.int64)),
                c.distill_temperature,
                c.distill_weight,
                c.label_smoothing,
            )
            loss.backward()
            self.optimizer.step()
            self.optimizer.clear_grad()
            self.schedule.step()
            self.ema.update(self.network)
            losses.append(float(loss))
        self.epoch += 1
        return float(np.mean(losses))


def load_pool(teacher_dir: Path) -> dict:
    path = teacher_dir / POOL_FILE
    if not path.exists():
        raise LinewatchError(f"teacher run {teacher_dir} has no {POOL_FILE}; train the teacher")
    with np.load(path) as pool:
        return {key: pool[key] for key in ("views", "targets", "logits")}


def train_student(config: TrainConfig, resume: bool = False) -> dict:
    teacher_dir = Path(config.teacher or "")
    pool = load_pool(teacher_dir)
    if pool["views"].shape[1] != config.image_size:
        raise LinewatchError(
            f"the teacher's views are {pool['views'].shape[1]} px; train the student at that "
            f"size (--image-size {pool['views'].shape[1]})"
        )
    if not config.split_from:
        config = TrainConfig(**{**config.__dict__, "split_from": str(teacher_dir / "split.json")})
    split = prepare_run(config, resume)
    cache = data.photo_cache_size(config.image_size)
    val_views = canonical_views(data.load_images(split.val, cache), config.image_size)
    with paddle.utils.unique_name.guard():
        trainer = DistillTrainer(config, split, pool)
        if resume:
            trainer.resume()
        if config.frozen_stages > 0:
            trainer.freeze_trunk(val_views)
        return trainer.fit_pool(val_views)
