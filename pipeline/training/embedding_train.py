"""`linewatch train-embedding`: the embedding head (embedding.py) on the features the
classifier reads — a Lite0 head's standardised pooled taps — of randomised line views of
the training photos: by default their whitened principal axes (fitted, nothing trained),
optionally beside a part trained with an additive angular margin (ArcMargin, as PP-ShiTu
trains its recognition head; `size` > 0).

The trunk is frozen, so those features are computed once by Paddle Inference and
cached (`RUN/embedding/taps.npz`): training a head then takes seconds per epoch. Besides
the head, k heads trained without a fold of the photos each score the views of the
photos they never saw against the others (held-out part novelty: what sets the gallery's
novelty threshold at export), and `leave_out_each` trains a head without each defect
class in turn to measure the novelty of a class the embedding never saw.

The trunk and classifier come from a training run (`RUN/config.json`, `best.pdparams`)
or, with `model`, from an exported folder (its graph's weights, as shipped).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import paddle
import yaml
from paddle import nn

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.gallery.search import search
from linewatch.pipeline.gallery.store import Gallery, normalise
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.embedding import (
    EMBED_DIR,
    EMBEDDING_CONFIG,
    EMBEDDING_FILE,
    HELD_OUT_FILE,
    SOURCE_FILE,
    EmbeddingHead,
    build_embedding_head,
    held_out_views,
)
from linewatch.pipeline.training.gallery_export import GALLERY_VIEWS, TOP_VIEWS, photo_line_views
from linewatch.pipeline.training.gallery_metrics import gallery_figures
from linewatch.pipeline.training.metrics import part_scores
from linewatch.pipeline.training.nets import build_network, load_exported_weights
from linewatch.pipeline.training.static_runner import StaticRunner
from linewatch.pipeline.training.teacher import photo_folds

TAPS_FILE = "taps.npz"
LEAVE_OUT_FILE = "leave_out.json"
CHECKPOINT = "last.pdckpt"
NORMAL_LABEL = "free"
PHOTO_CHUNK = 32


@dataclass(frozen=True)
class EmbeddingConfig:
    run_dir: str
    model: str | None = None  # an exported folder to take trunk and classifier from
    split_file: str | None = None  # with `model`: its split (validation never trained on)
    data: str | None = None  # with `model`: the data root (gallery sources are relative)
    views_per_image: int = 16  # cached line views per training photo
    size: int = 0  # the trained (ArcMargin) part of the embedding; 0: none
    keep: int = 128  # principal axes of the features kept beside it (D = size + keep)
    whiten: bool = True  # those axes centred and whitened (cosine ~ Mahalanobis distance)
    shrinkage: float = 0.01  # added to each axis' variance, a fraction of the mean variance
    hidden: int = 256
    epochs: int = 4  # ArcMargin overfits fast: longer makes unseen classes less novel
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    margin: float = 0.2  # ArcMargin m (radians)
    scale: float = 16.0  # ArcMargin s
    folds: int = 5  # heads without a fold each: the held-out novelty at export
    # the held-out parts' views (the threshold's): line_views.JITTERS key; "wide" (belts of
    # other grey levels and textures, shading, scales: a line, not the training crop) or
    # "default" (the gallery's own jitter: views 4-7 of the cached taps)
    threshold_views: str = "wide"
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class Taps:
    train: np.ndarray  # [photos * views, F] features of randomised line views
    train_targets: np.ndarray  # [photos * views]
    train_photo: np.ndarray  # [photos * views] index into split.train
    val: np.ndarray  # [val photos, F] features of each validation photo's canonical view
    val_targets: np.ndarray

    def views(self, first: int, count: int) -> np.ndarray:
        """A mask of each photo's views `first` .. `first + count - 1`."""
        rank = np.arange(len(self.train_photo)) - np.searchsorted(
            self.train_photo, self.train_photo
        )
        return (rank >= first) & (rank < first + count)


class ArcMargin(nn.Layer):
    """Additive angular margin softmax: logits s·cos(θ + m) for the true class and
    s·cos θ for the others, θ the angle between the embedding and the class centre."""

    def __init__(self, size: int, classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.margin, self.scale = margin, scale
        self.weight = self.create_parameter(
            [size, classes], default_initializer=nn.initializer.XavierNormal()
        )

    def forward(self, embeddings: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        cosine = paddle.matmul(
            nn.functional.normalize(embeddings, axis=1),
            nn.functional.normalize(self.weight, axis=0),
        ).clip(-1 + 1e-6, 1 - 1e-6)
        theta = paddle.acos(cosine)
        target = paddle.cos(paddle.clip(theta + self.margin, max=math.pi))
        one_hot = nn.functional.one_hot(targets, cosine.shape[1])
        logits = self.scale * (one_hot * target + (1 - one_hot) * cosine)
        return nn.functional.cross_entropy(logits, targets)


def embed_dir(config: EmbeddingConfig) -> Path:
    return Path(config.run_dir) / EMBED_DIR


def log(config: EmbeddingConfig, message: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    with (embed_dir(config) / "train.log").open("a") as out:
        out.write(line + "\n")


class Features(nn.Layer):
    """What the classifier reads (the features an embedding head takes), as one output."""

    def __init__(self, network: nn.Layer) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.network.forward_with_features(x)[1]


def network_from_model(model_dir: Path) -> tuple[nn.Layer, tuple[str, ...], int]:
    """The exported folder's network (its graph's weights), labels and input size."""
    config = yaml.safe_load((model_dir / "inference.yml").read_text())
    glob = config.get("Global") or {}
    if "arch" not in glob:
        raise LinewatchError(
            f"{model_dir}/inference.yml names no Global.arch: only folders written by "
            "`linewatch export` can be wrapped"
        )
    labels = tuple(config["PostProcess"]["label_list"])
    network = build_network(
        glob["arch"], len(labels), cell_features=bool(glob.get("cell_features", False))
    )
    load_exported_weights(network, model_dir)
    network.eval()
    return network, labels, int(glob["image_size"])


def source(config: EmbeddingConfig) -> tuple[nn.Layer, data.Split, int]:
    """(network, split, input size) from the exported folder or from the training run."""
    run_dir = Path(config.run_dir)
    if config.model is None:
        from linewatch.pipeline.training.export import load_run

        train_config, split, network = load_run(run_dir)
        return network, split, train_config.image_size
    if not config.split_file or not config.data:
        raise LinewatchError("--model needs --split-file (its split) and --data (the data root)")
    network, labels, size = network_from_model(Path(config.model))
    split = data.Split.load(Path(config.split_file))
    if split.labels != labels:
        raise LinewatchError(f"{config.split_file} labels {split.labels} are not {labels}")
    (embed_dir(config) / SOURCE_FILE).write_text(
        json.dumps({"model": config.model, "split": config.split_file, "data": config.data})
    )
    return network, split, size


def cache_taps(config: EmbeddingConfig, network: nn.Layer, split: data.Split, size: int) -> Taps:
    """The cached features (computed once, by Paddle Inference, in chunks of photos)."""
    path = embed_dir(config) / TAPS_FILE
    if path.exists():
        with np.load(path) as stored:
            return Taps(**{name: stored[name] for name in Taps.__dataclass_fields__})
    runner = StaticRunner.of(
        Features(network), size, embed_dir(config) / "features", config.threads
    )
    chunks, start = [], time.time()
    for first in range(0, len(split.train), PHOTO_CHUNK):
        items = split.train[first : first + PHOTO_CHUNK]
        views = photo_line_views(items, size, config.views_per_image, config.seed + first)
        chunks.append(runner(data.to_batch(views)))
        done = first + len(items)
        rate = done * config.views_per_image / (time.time() - start)
        log(config, f"train taps: {done}/{len(split.train)} photos, {rate:.0f} views/s")
    cache = data.photo_cache_size(size)
    val_views = np.stack(
        [line_views.canonical_view(data.load_image(item, cache), size) for item, _ in split.val]
    )
    targets = np.array([target for _, target in split.train])
    taps = Taps(
        train=np.concatenate(chunks),
        train_targets=np.repeat(targets, config.views_per_image),
        train_photo=np.repeat(np.arange(len(targets)), config.views_per_image),
        val=runner(data.to_batch(val_views)),
        val_targets=np.array([target for _, target in split.val]),
    )
    np.savez(path, **asdict(taps))
    log(config, f"cached {len(taps.train)} train and {len(taps.val)} validation taps")
    return taps


def embed(head: EmbeddingHead | None, features: np.ndarray) -> np.ndarray:
    """Unit embeddings of features (the features themselves without a head)."""
    if head is None:
        return normalise(features)
    head.eval()
    with paddle.no_grad():
        return normalise(head(paddle.to_tensor(features.astype(np.float32))).numpy())


def train_head(
    config: EmbeddingConfig,
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    what: str,
    checkpoint: Path | None = None,
) -> EmbeddingHead:
    """A head trained with ArcMargin for `config.epochs`, a progress line per epoch;
    with `checkpoint`, resumable after a stop (saved after every epoch)."""
    # fresh names (optimizer moments included), so a checkpoint resumes in any process
    with paddle.utils.unique_name.guard():
        return _train_head(config, features, targets, classes, what, checkpoint)


def _train_head(
    config: EmbeddingConfig,
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    what: str,
    checkpoint: Path | None,
) -> EmbeddingHead:
    paddle.seed(config.seed)
    rng = np.random.default_rng([config.seed, 5])
    head = build_embedding_head(
        features.shape[1], config.size, config.hidden, config.keep, config.whiten, config.shrinkage
    )
    head.fit_projection(features)
    if not config.size:  # the whitened projection alone: nothing to train
        head.eval()
        return head
    with paddle.utils.unique_name.guard("arcmargin_"):
        arc = ArcMargin(config.size, classes, config.margin, config.scale)
    steps = max(1, len(features) // config.batch_size)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(config.lr, config.epochs * steps)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=head.trained_parameters() + arc.parameters(),
        weight_decay=config.weight_decay,
    )
    epoch = 0
    if checkpoint is not None and checkpoint.exists():
        state = paddle.load(str(checkpoint))
        head.set_state_dict(state["head"])
        arc.set_state_dict(state["arc"])
        optimizer.set_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        epoch = int(state["epoch"])
        schedule.last_epoch = epoch * steps - 1
        schedule.step()
        log(config, f"{what}: resumed after epoch {epoch}")
    train_x = paddle.to_tensor(features.astype(np.float32))
    while epoch < config.epochs:
        head.train()
        losses = []
        for indices in data.balanced_batches(targets, config.batch_size, steps, rng):
            batch = paddle.gather(train_x, paddle.to_tensor(indices))
            loss = arc(head.net(batch), paddle.to_tensor(targets[indices].astype(np.int64)))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            schedule.step()
            losses.append(float(loss))
        epoch += 1
        log(config, f"{what}: epoch {epoch}/{config.epochs} loss {np.mean(losses):.3f}")
        if checkpoint is not None:
            state = {"head": head.state_dict(), "arc": arc.state_dict(), "epoch": epoch}
            state |= {"optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state}
            paddle.save(state, str(checkpoint))
    head.eval()
    return head


def gallery_of(
    embeddings: np.ndarray, taps: Taps, labels: tuple[str, ...], keep: np.ndarray
) -> Gallery:
    return Gallery.of(
        embeddings[keep],
        [labels[t] for t in taps.train_targets[keep]],
        [f"train:{photo}#{i}" for i, photo in enumerate(taps.train_photo[keep])],
    )


def threshold_taps(
    config: EmbeddingConfig, network: nn.Layer, split: data.Split, size: int
) -> np.ndarray | None:
    """Features [photos * GALLERY_VIEWS, F] of the held-out parts' views when they are not
    the cached taps' (`threshold_views` other than "default"): GALLERY_VIEWS views of each
    training photo with that jitter, from their own seed (cached)."""
    if config.threshold_views == "default":
        return None
    if config.threshold_views not in line_views.JITTERS:
        raise LinewatchError(
            f"threshold views {config.threshold_views!r}: one of {sorted(line_views.JITTERS)}"
        )
    path = embed_dir(config) / f"threshold_taps_{config.threshold_views}.npz"
    if path.exists():
        with np.load(path) as stored:
            return stored["features"]
    runner = StaticRunner.of(
        Features(network), size, embed_dir(config) / "features", config.threads
    )
    jitter, chunks = line_views.JITTERS[config.threshold_views], []
    for first in range(0, len(split.train), PHOTO_CHUNK):
        items = split.train[first : first + PHOTO_CHUNK]
        seed = config.seed + 7919 + first  # not the cached taps' views
        chunks.append(
            runner(data.to_batch(photo_line_views(items, size, GALLERY_VIEWS, seed, jitter)))
        )
    features = np.concatenate(chunks)
    np.savez(path, features=features)
    log(config, f"cached {len(features)} {config.threshold_views}-jitter threshold taps")
    return features


def held_out_novelty(
    config: EmbeddingConfig, taps: Taps, classes: int, queries_taps: np.ndarray | None = None
) -> np.ndarray:
    """Part novelty of every training photo from the head trained without its fold: its
    query views searched against the other folds' first GALLERY_VIEWS views, dealt into
    one part (top-TOP_VIEWS mean). The query views: `queries_taps` (GALLERY_VIEWS per
    photo, in photo order) when given, else its views GALLERY_VIEWS.. 2*GALLERY_VIEWS-1."""
    targets = taps.train_targets[taps.views(0, 1)]
    photo_fold = photo_folds(targets, config.folds, config.seed)
    fold = photo_fold[taps.train_photo]
    gallery_views = taps.views(0, GALLERY_VIEWS)
    if queries_taps is None:
        query_views = taps.views(GALLERY_VIEWS, GALLERY_VIEWS)
        features, photo = taps.train[query_views], taps.train_photo[query_views]
    else:
        features, photo = queries_taps, np.repeat(np.arange(len(targets)), GALLERY_VIEWS)
    novelty = np.zeros(len(features), np.float32)
    for k in range(config.folds):
        head = train_head(
            config, taps.train[fold != k], taps.train_targets[fold != k], classes, f"fold {k + 1}"
        )
        gallery = gallery_of(
            embed(head, taps.train), taps, ("",) * classes, gallery_views & (fold != k)
        )
        queries = photo_fold[photo] == k
        novelty[queries] = search(gallery, embed(head, features[queries])).novelty
    parts, _ = part_scores(novelty, photo, GALLERY_VIEWS, TOP_VIEWS)
    return parts


def train_embedding(config: EmbeddingConfig, resume: bool = False) -> Path:
    """Cache the taps, train the fold heads (held-out novelty) and the head; returns the
    head's file (`RUN/embedding_head.pdparams`)."""
    out = embed_dir(config)
    if (out / CHECKPOINT).exists() and not resume:
        raise LinewatchError(f"{out} already has a checkpoint; use --resume or another --run-dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=1))
    paddle.set_device("cpu")
    network, split, size = source(config)
    taps = cache_taps(config, network, split, size)
    classes = len(split.labels)
    if held_out_views(out / HELD_OUT_FILE) != config.threshold_views:
        queries = threshold_taps(config, network, split, size)
        parts = held_out_novelty(config, taps, classes, queries)
        np.savez(out / HELD_OUT_FILE, part_novelty=parts, views=config.threshold_views)
    head = train_head(config, taps.train, taps.train_targets, classes, "head", out / CHECKPOINT)
    run_dir = Path(config.run_dir)
    paddle.save(head.state_dict(), str(run_dir / EMBEDDING_FILE))
    shape = {"features": int(taps.train.shape[1]), "size": config.size, "hidden": config.hidden}
    shape |= {"keep": config.keep, "whiten": config.whiten, "shrinkage": config.shrinkage}
    (run_dir / EMBEDDING_CONFIG).write_text(json.dumps(shape))
    report = figures(head, taps, split.labels, config.seed)
    log(config, f"head saved; validation line views: {_summary(report)}")
    return run_dir / EMBEDDING_FILE


def figures(head: EmbeddingHead | None, taps: Taps, labels: tuple[str, ...], seed: int) -> dict:
    """Gallery figures of the validation canonical views against each training photo's
    first GALLERY_VIEWS views, embedded by `head` (None: the features themselves)."""
    gallery = gallery_of(embed(head, taps.train), taps, labels, taps.views(0, GALLERY_VIEWS))
    truth = [labels[t] for t in taps.val_targets]
    defects = [label for label in labels if label != NORMAL_LABEL]
    return gallery_figures(gallery, embed(head, taps.val), truth, defects, seed)


def _summary(report: dict) -> str:
    few = report["few_shot_recall"]
    mean = {n: np.mean(list(v.values())) for n, v in few.items()}
    return (
        f"1-NN macro-F1 {report['nn_macro_f1']:.3f}, mean novelty AUROC "
        f"{report['mean_novelty_auroc']:.3f}, few-shot recall 5: {mean['5']:.3f} "
        f"10: {mean['10']:.3f}"
    )


def leave_out_each(config: EmbeddingConfig) -> dict:
    """Leave-one-class-out figures three ways: the frozen features (no head), the head
    trained on all classes (optimistic: it has seen the class it is asked to call
    novel), and a head trained without that class (the real unknown-defect figure)."""
    out = embed_dir(config)
    network, split, size = source(config)
    taps = cache_taps(config, network, split, size)
    labels, classes = split.labels, len(split.labels)
    head = train_head(config, taps.train, taps.train_targets, classes, "all classes")
    report = {"frozen features": figures(None, taps, labels, config.seed)}
    report["head, all classes"] = figures(head, taps, labels, config.seed)
    unseen: dict = {"novelty_auroc": {}, "few_shot_recall": {"5": {}, "10": {}}}
    for label in [label for label in labels if label != NORMAL_LABEL]:
        index = labels.index(label)
        keep = taps.train_targets != index
        without = train_head(
            config, taps.train[keep], taps.train_targets[keep], classes, f"without {label}"
        )
        own = figures(without, taps, labels, config.seed)
        unseen["novelty_auroc"][label] = own["novelty_auroc"][label]
        for shots in unseen["few_shot_recall"]:
            unseen["few_shot_recall"][shots][label] = own["few_shot_recall"][shots][label]
    unseen["mean_novelty_auroc"] = float(np.mean(list(unseen["novelty_auroc"].values())))
    report["head without the class"] = unseen
    (out / LEAVE_OUT_FILE).write_text(json.dumps(report, indent=1))
    for name, figures_ in report.items():
        log(config, f"{name}: {json.dumps(_rounded(figures_))}")
    return report


def _rounded(value: object) -> object:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value
