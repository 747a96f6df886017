"""The training recipe: balanced sampling, augmentation, label smoothing, warmup + cosine LR,
gradient clipping, EMA weights, AMP on GPU, early stopping on validation macro-F1,
checkpoints with resume, and a run folder with the config and per-epoch metrics."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import paddle
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training import LITE_ARCHITECTURES, data
from linewatch.pipeline.training.metrics import class_report
from linewatch.pipeline.training.nets import build_network


@dataclass(frozen=True)
class TrainConfig:
    data: str
    run_dir: str
    arch: str = "PPLCNet_x0_5"
    image_size: int = 160
    epochs: int = 40
    steps_per_epoch: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.02
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    grad_clip: float = 5.0
    ema_decay: float = 0.995
    patience: int = 12
    val_fraction: float = 0.2
    synthetic_per_class: int = 0
    seed: int = 0
    threads: int = 2
    init_from: str | None = None  # fine-tune from these weights (a run's best.pdparams)
    split_from: str | None = None  # keep another run's split of the real images (split.json)
    quarter_turns: bool = False  # 90° turns; off by default: tiles are filmed upright
    cell_loss_weight: float = 1.0  # per-cell loss on defect masks (0 turns it off)
    defect_cell_weight: float = 5.0  # defect cells are rare: weigh them up
    pretrained: bool = False  # ImageNet weights (EfficientNetLite0, from the [train] extra)
    views: str = "photo"  # "line": training views cut by crop_view from a belt (line_views)
    views_per_image: int = 8  # teacher: line views per training photo (features cached)
    teacher: str | None = None  # distil from this teacher run folder (its pool.npz)
    distill_temperature: float = 4.0
    distill_weight: float = 0.7  # soft-label share of the loss; the rest is the hard label
    init_from_model: str | None = None  # warm start from an exported folder (same arch)
    frozen_stages: int = 0  # distillation: PP-LCNet stages kept frozen, run by the predictor
    folds: int = 0  # Lite0 heads: k-fold held-out training scores set the operating point
    photo_share: float = 0.0  # Lite0: share of training views cut as uploaded photos
    line_jitter: str = "default"  # Lite0: line_views.JITTERS (how far line views stray)
    finetune_from_block: int | None = None  # Lite0: train the trunk from this block on
    trunk_lr_scale: float = 0.1  # fine-tune: the trunk's learning rate over the head's
    head_warmup_views: int = 8  # fine-tune: views per photo for the frozen-trunk head start
    calibration_fraction: float = 0.0  # training photos held out for the operating point
    calibration_views: int = 20  # fine-tune: line views per calibration photo
    cell_features: bool = False  # Lite0 frozen head: + a mask-trained cell head's features


NORMAL_LABEL = "free"


class EMA:
    """Exponential moving average of the weights (and BN statistics) for evaluation."""

    def __init__(self, network: paddle.nn.Layer, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.numpy().copy() for k, v in network.state_dict().items()}

    def update(self, network: paddle.nn.Layer) -> None:
        # Warm the decay up so the average is not dominated by the random start.
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in network.state_dict().items():
            current = value.numpy()
            if np.issubdtype(current.dtype, np.floating):
                self.shadow[key] = decay * self.shadow[key] + (1 - decay) * current
            else:
                self.shadow[key] = current.copy()

    def state(self) -> dict[str, np.ndarray]:
        return self.shadow


def smoothed_loss(
    logits: paddle.Tensor, targets: paddle.Tensor, classes: int, smoothing: float
) -> paddle.Tensor:
    soft = paddle.nn.functional.one_hot(targets, classes) * (1 - smoothing) + smoothing / classes
    return -(soft * paddle.nn.functional.log_softmax(logits, axis=1)).sum(axis=1).mean()


def cell_loss(
    cells: paddle.Tensor, targets: np.ndarray, defect_weight: float, normal: int
) -> paddle.Tensor:
    """Weighted per-cell cross-entropy; cells of images without a mask (-1) count zero."""
    classes = cells.shape[1]
    logits = cells.transpose([0, 2, 3, 1]).reshape([-1, classes])
    flat = targets.reshape(-1)
    weights = np.where(flat < 0, 0.0, np.where(flat == normal, 1.0, defect_weight))
    if weights.sum() == 0:
        return paddle.zeros([])
    per_cell = paddle.nn.functional.cross_entropy(
        logits, paddle.to_tensor(np.maximum(flat, 0)), reduction="none"
    ).reshape([-1])
    weight_tensor = paddle.to_tensor(weights.astype(np.float32))
    return (per_cell * weight_tensor).sum() / float(weights.sum())


def predict_probs(network: paddle.nn.Layer, grey: np.ndarray, batch_size: int = 64) -> np.ndarray:
    network.eval()
    outputs = []
    with paddle.no_grad():
        for start in range(0, len(grey), batch_size):
            batch = paddle.to_tensor(data.to_batch(grey[start : start + batch_size]))
            outputs.append(paddle.nn.functional.softmax(network(batch), axis=1).numpy())
    return np.concatenate(outputs)


class Trainer:
    def __init__(self, config: TrainConfig, split: data.Split) -> None:
        self.config = config
        self.split = split
        self.run_dir = Path(config.run_dir)
        self.rng = np.random.default_rng(config.seed)
        paddle.seed(config.seed)
        self.network = build_network(config.arch, len(split.labels))
        if config.init_from:
            self.network.set_state_dict(paddle.load(config.init_from))
        self.schedule = self._schedule()
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=self.schedule,
            parameters=self.network.parameters(),
            weight_decay=config.weight_decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(config.grad_clip),
        )
        self.ema = EMA(self.network, config.ema_decay)
        self.use_amp = paddle.device.is_compiled_with_cuda()
        self.scaler = paddle.amp.GradScaler() if self.use_amp else None
        self.epoch, self.best_f1, self.stale_epochs = 0, -1.0, 0

    def _schedule(self) -> paddle.optimizer.lr.LRScheduler:
        c = self.config
        total = c.epochs * c.steps_per_epoch
        warmup = c.warmup_epochs * c.steps_per_epoch
        cosine = paddle.optimizer.lr.CosineAnnealingDecay(c.lr, max(1, total - warmup))
        return paddle.optimizer.lr.LinearWarmup(cosine, max(1, warmup), 0.0, c.lr)

    def fit(
        self, train_grey: np.ndarray, val_grey: np.ndarray, train_masks: data.Masks
    ) -> dict[str, float]:
        targets = np.array([index for _, index in self.split.train])
        val_targets = np.array([index for _, index in self.split.val])
        best: dict[str, float] = {}
        with _progress() as progress:
            task = progress.add_task(
                "training", total=self.config.epochs, completed=self.epoch, status=""
            )
            while self.epoch < self.config.epochs and self.stale_epochs < self.config.patience:
                loss = self._train_epoch(train_grey, targets, train_masks)
                metrics = self._validate(val_grey, val_targets, loss)
                best = metrics if metrics["improved"] else best
                progress.update(task, advance=1, status=_status(metrics, self.best_f1))
        return best

    def _train_epoch(self, grey: np.ndarray, targets: np.ndarray, masks: data.Masks) -> float:
        c = self.config
        self.network.train()
        losses = []
        for indices in data.balanced_batches(targets, c.batch_size, c.steps_per_epoch, self.rng):
            pairs = [
                data.augment(grey[i], c.image_size, self.rng, masks.masks[i], c.quarter_turns)
                for i in indices
            ]
            images = np.stack([image for image, _ in pairs])
            batch_masks = data.Masks(np.stack([m for _, m in pairs]), masks.known[indices])
            losses.append(self._step(images, targets[indices], batch_masks))
            self.schedule.step()
            self.ema.update(self.network)
        self.epoch += 1
        return float(np.mean(losses))

    def _uses_cells(self) -> bool:
        return (
            self.config.cell_loss_weight > 0
            and NORMAL_LABEL in self.split.labels
            and hasattr(self.network, "forward_with_cells")
        )

    def _loss(self, images: np.ndarray, targets: np.ndarray, masks: data.Masks) -> paddle.Tensor:
        c = self.config
        batch = paddle.to_tensor(data.to_batch(images))
        labels = paddle.to_tensor(targets.astype(np.int64))
        classes = len(self.split.labels)
        if not self._uses_cells():
            return smoothed_loss(self.network(batch), labels, classes, c.label_smoothing)
        logits, cells = self.network.forward_with_cells(batch)
        normal = self.split.labels.index(NORMAL_LABEL)
        cell_targets = data.cell_targets(
            masks.masks, targets, masks.known, normal, int(cells.shape[-1])
        )
        return smoothed_loss(logits, labels, classes, c.label_smoothing) + (
            c.cell_loss_weight * cell_loss(cells, cell_targets, c.defect_cell_weight, normal)
        )

    def _step(self, images: np.ndarray, targets: np.ndarray, masks: data.Masks) -> float:
        with paddle.amp.auto_cast(enable=self.use_amp):
            loss = self._loss(images, targets, masks)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.minimize(self.optimizer, loss)
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        return float(loss)

    def _validate(self, grey: np.ndarray, targets: np.ndarray, loss: float) -> dict:
        live = {k: v.numpy().copy() for k, v in self.network.state_dict().items()}
        self.network.set_state_dict(self.ema.state())
        probs = self._predict_val(grey)
        self.network.set_state_dict(live)
        report = class_report(targets, probs.argmax(axis=1), self.split.labels)
        improved = report.macro_f1 > self.best_f1
        if improved:
            self.best_f1, self.stale_epochs = report.macro_f1, 0
            paddle.save(self.ema.state(), str(self.run_dir / "best.pdparams"))
        else:
            self.stale_epochs += 1
        metrics = {
            "epoch": self.epoch,
            "loss": loss,
            "val_macro_f1": report.macro_f1,
            "val_accuracy": report.accuracy,
            "val_macro_f1_real": self._real_macro_f1(targets, probs),
            "lr": float(self.optimizer.get_lr()),
            "improved": improved,
            "time": time.time(),
        }
        with (self.run_dir / "metrics.jsonl").open("a") as out:
            out.write(json.dumps(metrics) + "\n")
        self._checkpoint()
        return metrics

    def _predict_val(self, grey: np.ndarray) -> np.ndarray:
        return predict_probs(self.network, grey)

    def _real_macro_f1(self, targets: np.ndarray, probs: np.ndarray) -> float | None:
        """Macro-F1 on the validation photos alone (generated tiles are the easy part)."""
        real = np.array([not item.startswith(data.SYNTHETIC_PREFIX) for item, _ in self.split.val])
        if not real.any():
            return None
        predicted = probs[real].argmax(axis=1)
        return class_report(targets[real], predicted, self.split.labels).macro_f1

    def _checkpoint(self) -> None:
        paddle.save(
            {
                "network": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state(),
                "rng": self.rng.bit_generator.state,
                "progress": [self.epoch, self.best_f1, self.stale_epochs],
            },
            str(self.run_dir / "last.pdckpt"),
        )

    def resume(self) -> None:
        path = self.run_dir / "last.pdckpt"
        if not path.exists():
            raise LinewatchError(f"nothing to resume: {path} does not exist")
        state = paddle.load(str(path))
        self.network.set_state_dict(state["network"])
        self.optimizer.set_state_dict(state["optimizer"])
        self.ema.shadow = {k: np.asarray(v) for k, v in state["ema"].items()}
        self.ema.updates = int(state["progress"][0]) * self.config.steps_per_epoch
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.best_f1, self.stale_epochs = state["progress"]
        self.epoch = int(self.epoch)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )


def _status(metrics: dict, best: float) -> str:
    return (
        f"loss {metrics['loss']:.3f}  val macro-F1 {metrics['val_macro_f1']:.3f} (best {best:.3f})"
    )


def prepare_run(config: TrainConfig, resume: bool) -> data.Split:
    """Create the run folder, and the split (or reuse the saved one when resuming)."""
    run_dir = Path(config.run_dir)
    split_file = run_dir / "split.json"
    if resume and split_file.exists():
        return data.Split.load(split_file)
    if run_dir.exists() and any(run_dir.glob("*.pd*")) and not resume:
        raise LinewatchError(
            f"run folder {run_dir} already has checkpoints; use --resume or another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.split_from:
        real = data.Split.load(Path(config.split_from)).without_synthetic()
    else:
        labels, items = data.scan_image_folder(Path(config.data))
        real = data.stratified_split(labels, items, config.val_fraction, config.seed)
    synthetic = data.stratified_split(
        real.labels,
        data.synthetic_items(real.labels, config.synthetic_per_class),
        config.val_fraction,
        config.seed,
    )
    split = data.Split(
        real.labels, real.train + synthetic.train, real.val + synthetic.val
    ).with_calibration(config.calibration_fraction, config.seed + 1)
    split.save(split_file)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))
    return split


def train(config: TrainConfig, resume: bool = False) -> dict[str, float]:
    """Train and keep the best EMA weights in `run_dir/best.pdparams`."""
    paddle.set_device("gpu" if paddle.device.is_compiled_with_cuda() else "cpu")
    if config.cell_features and (
        config.arch not in LITE_ARCHITECTURES or config.finetune_from_block is not None
    ):
        raise LinewatchError(
            "--cell-features is for an EfficientNet-Lite0 head on a frozen trunk: "
            "drop --finetune-from-block, or choose an EfficientNetLite0 --arch"
        )
    if config.arch in LITE_ARCHITECTURES and config.finetune_from_block is not None:
        from linewatch.pipeline.training.finetune import train_finetune

        return train_finetune(config, resume)
    if config.arch in LITE_ARCHITECTURES:
        from linewatch.pipeline.training.teacher import train_teacher

        return train_teacher(config)
    if config.teacher:
        from linewatch.pipeline.training.distill import train_student

        return train_student(config, resume)
    split = prepare_run(config, resume)
    cache = int(config.image_size * 1.15)
    train_grey = data.load_images(split.train, cache)
    normal = split.labels.index(NORMAL_LABEL) if NORMAL_LABEL in split.labels else None
    train_masks = data.load_masks(split.train, normal, cache)
    val_grey = data.load_images(split.val, config.image_size)
    # Fresh variable names (optimizer moments included), so a checkpoint saved by one
    # process resumes in another whatever else that process trained before.
    with paddle.utils.unique_name.guard():
        trainer = Trainer(config, split)
        if resume:
            trainer.resume()
        return trainer.fit(train_grey, val_grey, train_masks)
