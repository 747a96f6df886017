"""Embedding variants for the gallery, leave-one-class-out, on a train-embedding run's
cached taps (`RUN/embedding/taps.npz`): the table of MODEL_CARD "Gallery" (issue 26).

    python bench/embedding_variants.py /tmp/gm/runs/embed

Every variant is a map of the taps fitted (and, with an ArcMargin part, trained) on the
training views WITHOUT the class it is asked to call novel; the gallery holds each
training photo's first 4 views, the queries are the validation photos' canonical views
(`embedding_train.figures`, the protocol of `--leave-out-each`). Per defect class:
novelty AUROC of that class against the others (the class removed from the gallery),
and few-shot recall with 5 / 10 of its photos put back (5 draws, as
`gallery_metrics.few_shot_recall` draws them). 1-NN macro-F1 uses a map fitted on all
classes. Scores: nearest entry (what `pipeline/gallery/search.py` does), the mean of the
k nearest, or the nearest class mean. `--supcon`: instead, the shipped map beside a
supervised-contrastive MLP on the taps (model card, 2026-12-08).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from linewatch.pipeline.gallery.store import normalise
from linewatch.pipeline.training import data
from linewatch.pipeline.training.embedding_train import (
    TAPS_FILE,
    EmbeddingConfig,
    Taps,
    embed,
    train_head,
)
from linewatch.pipeline.training.gallery_export import GALLERY_VIEWS
from linewatch.pipeline.training.gallery_metrics import FEW_SHOT, FEW_SHOT_DRAWS, auroc
from linewatch.pipeline.training.static_runner import StaticRunner

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")
NORMAL = LABELS.index("free")
Map = Callable[[np.ndarray], np.ndarray]  # taps -> unit embeddings


def cached_taps(
    run_dir: Path, name: str, compute: Callable[[data.Split, StaticRunner], np.ndarray]
) -> np.ndarray:
    """`RUN/embedding/<name>`: features `compute(split, the run's feature graph)` made
    once (the split and graph of a `train-embedding --model` run)."""
    path = run_dir / "embedding" / name
    if path.exists():
        with np.load(path) as stored:
            return stored["features"]
    source = json.loads((run_dir / "embedding" / "source.json").read_text())
    split = data.Split.load(Path(source["split"]))
    features = compute(split, StaticRunner(run_dir / "embedding" / "features", threads=2))
    np.savez(path, features=features)
    return features


def whitening(features: np.ndarray, keep: int, shrinkage: float, whiten: bool = True) -> Map:
    """Centred projection on the first `keep` principal axes, each scaled by
    1 / sqrt(variance + shrinkage * mean variance) (`whiten`), then unit length."""
    mean = features.mean(axis=0)
    variance, axes = np.linalg.eigh(np.cov(features - mean, rowvar=False))
    variance, axes = np.clip(variance[::-1], 0, None), axes[:, ::-1][:, :keep]
    if whiten:
        axes = axes / np.sqrt(variance[:keep] + shrinkage * variance.mean())
    return lambda taps: normalise((taps - mean) @ axes)


def within_class_whitening(features: np.ndarray, targets: np.ndarray, keep: int) -> Map:
    """Whitening with the pooled within-class covariance (Lee et al.'s tied covariance)."""
    residual = features.copy()
    for target in np.unique(targets):
        residual[targets == target] -= features[targets == target].mean(axis=0)
    mean = features.mean(axis=0)
    variance, axes = np.linalg.eigh(np.cov(residual, rowvar=False))
    variance, axes = np.clip(variance[::-1], 0, None), axes[:, ::-1][:, :keep]
    axes = axes / np.sqrt(variance[:keep] + 0.01 * variance.mean())
    return lambda taps: normalise((taps - mean) @ axes)


def score(
    gallery: np.ndarray, labels: np.ndarray, queries: np.ndarray, rule: str, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(novelty, predicted label) of each query: rule "nn" (novelty from the mean of
    the k nearest similarities, label of the nearest) or "mean" (nearest class mean)."""
    if rule == "mean":
        classes = np.unique(labels)
        means = normalise(np.stack([gallery[labels == c].mean(axis=0) for c in classes]))
        similarity = queries @ means.T
        return 1 - similarity.max(axis=1), classes[similarity.argmax(axis=1)]
    similarity = queries @ gallery.T
    nearest = -np.sort(-similarity, axis=1)[:, :k]
    return 1 - nearest.mean(axis=1), labels[similarity.argmax(axis=1)]


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    f1 = []
    for c in np.unique(truth):
        hits = ((predicted == c) & (truth == c)).sum()
        f1.append(2 * hits / ((predicted == c).sum() + (truth == c).sum()))
    return float(np.mean(f1))


def evaluate(taps: Taps, fit: Callable[[np.ndarray], Map], rule: str = "nn", k: int = 1) -> dict:
    """Figures of the map `fit(mask of the training views it may see)` returns."""
    rank = np.arange(len(taps.train_photo)) - np.searchsorted(taps.train_photo, taps.train_photo)
    shown = rank < GALLERY_VIEWS
    targets, photos = taps.train_targets[shown], taps.train_photo[shown]
    names = np.array([f"train:{photo}" for photo in photos])  # drawn as the library draws
    figures: dict = {"auroc": {}, **{f"few_{n}": {} for n in FEW_SHOT}}
    for left_out in [c for c in range(len(LABELS)) if c != NORMAL]:
        embedding = fit(taps.train_targets != left_out)
        gallery, queries = embedding(taps.train[shown]), embedding(taps.val)
        known = targets != left_out
        novelty, _ = score(gallery[known], targets[known], queries, rule, k)
        figures["auroc"][LABELS[left_out]] = auroc(novelty, taps.val_targets == left_out)
        own = np.unique(names[~known])
        for shots in FEW_SHOT:
            rng = np.random.default_rng([0, shots])
            recalls = []
            for _ in range(FEW_SHOT_DRAWS):
                chosen = rng.choice(own, size=min(shots, len(own)), replace=False)
                kept = known | np.isin(names, chosen)
                asked = queries[taps.val_targets == left_out]
                _, found = score(gallery[kept], targets[kept], asked, rule)
                recalls.append(float((found == left_out).mean()))
            figures[f"few_{shots}"][LABELS[left_out]] = float(np.mean(recalls))
    embedding = fit(np.ones(len(taps.train_targets), bool))
    _, predicted = score(embedding(taps.train[shown]), targets, embedding(taps.val), rule)
    figures["f1"] = macro_f1(taps.val_targets, predicted)
    return figures


def with_head(
    taps: Taps, config: EmbeddingConfig, weight: float, on_whitened: bool
) -> Callable[[np.ndarray], Map]:
    """Whitened axes (128) beside an ArcMargin head (its cosine share 1 - weight), the
    head trained on the taps or on the whitened axes, without the left-out class."""

    def fit(mask: np.ndarray) -> Map:
        whitened = whitening(taps.train[mask], 128, 0.01)
        inputs = (lambda x: whitened(x) * np.sqrt(128)) if on_whitened else (lambda x: x)
        head = train_head(config, inputs(taps.train[mask]), taps.train_targets[mask], 6, "h")
        return lambda x: normalise(
            np.concatenate(
                [np.sqrt(weight) * whitened(x), np.sqrt(1 - weight) * embed(head, inputs(x))],
                axis=1,
            )
        )

    return fit


def supcon_map(features: np.ndarray, targets: np.ndarray, epochs: int = 30) -> Map:
    """An MLP (standardised features -> 256 -> 128, unit length) trained with the
    supervised contrastive loss (Khosla et al. 2020, temperature 0.1) on `features`."""
    import paddle
    from paddle import nn

    paddle.seed(0)
    rng = np.random.default_rng(0)
    mean, scale = features.mean(0), 1 / (features.std(0) + 1e-3)
    net = nn.Sequential(
        nn.Dropout(0.1), nn.Linear(features.shape[1], 256), nn.ReLU(), nn.Linear(256, 128)
    )
    steps = max(1, len(features) // 256)
    optimizer = paddle.optimizer.AdamW(1e-3, parameters=net.parameters(), weight_decay=1e-4)
    net.train()
    for batch in data.balanced_batches(targets, 256, epochs * steps, rng):
        z = nn.functional.normalize(net(paddle.to_tensor((features[batch] - mean) * scale)), axis=1)
        labels = paddle.to_tensor(targets[batch])
        same = (labels.unsqueeze(0) == labels.unsqueeze(1)).astype("float32")
        others = 1 - paddle.eye(len(batch))
        logits = z @ z.T / 0.1 - 1e9 * (1 - others)
        log_prob = logits - paddle.logsumexp(logits, axis=1, keepdim=True)
        positives = same * others
        loss = -((positives * log_prob).sum(1) / positives.sum(1).clip(min=1)).mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    net.eval()

    def apply(x: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return normalise(net(paddle.to_tensor(((x - mean) * scale).astype(np.float32))).numpy())

    return apply


def with_supcon(taps: Taps, weight: float) -> Callable[[np.ndarray], Map]:
    """Whitened axes (128; cosine share `weight`) beside a SupCon embedding (1 - weight),
    both fitted without the left-out class; weight 0: the SupCon embedding alone."""

    def fit(mask: np.ndarray) -> Map:
        whitened = whitening(taps.train[mask], 128, 0.01)
        contrastive = supcon_map(taps.train[mask], taps.train_targets[mask])
        return lambda x: normalise(
            np.concatenate(
                [np.sqrt(weight) * whitened(x), np.sqrt(1 - weight) * contrastive(x)], axis=1
            )
        )

    return fit


def row(name: str, figures: dict) -> str:
    means = [np.mean(list(figures[key].values())) for key in ("auroc", "few_5", "few_10")]
    per_class = " | ".join(f"{value:.3f}" for value in figures["auroc"].values())
    return (
        f"| {name} | **{means[0]:.3f}** | {per_class} | {means[1]:.2f} / {means[2]:.2f} "
        f"| {figures['f1']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a train-embedding run (its cached taps)")
    parser.add_argument("--heads", action="store_true", help="also the ArcMargin variants")
    parser.add_argument("--supcon", action="store_true", help="only the SupCon variants")
    args = parser.parse_args()
    with np.load(args.run_dir / "embedding" / TAPS_FILE) as stored:
        taps = Taps(**{name: stored[name] for name in Taps.__dataclass_fields__})
    train = taps.train
    print(
        "| variant | mean AUROC | " + " | ".join(LABELS[:4] + LABELS[5:]) + " | few-shot "
        "5 / 10 | 1-NN F1 |"
    )
    print("|---" * 9 + "|")
    if args.supcon:
        print(
            row(
                "whitened K 128 (shipped)", evaluate(taps, lambda m: whitening(train[m], 128, 0.01))
            )
        )
        for weight in (0.0, 0.5, 0.7):
            name = f"whitened K 128 ({weight}) + SupCon MLP on the taps"
            print(row(name, evaluate(taps, with_supcon(taps, weight))), flush=True)
        return
    print(row("frozen taps (unit length)", evaluate(taps, lambda m: normalise)))
    for keep in (64, 128, 256):
        fit = lambda m, keep=keep: whitening(train[m], keep, 0.01, whiten=False)  # noqa: E731
        print(row(f"centred principal axes, K {keep}", evaluate(taps, fit)))
    for keep in (64, 96, 128, 192, 256):
        for shrinkage in (0.01, 0.1, 1.0):
            fit = lambda m, k=keep, s=shrinkage: whitening(train[m], k, s)  # noqa: E731
            print(row(f"whitened, K {keep}, shrinkage {shrinkage}", evaluate(taps, fit)))
    shipped = lambda m: whitening(train[m], 128, 0.01)  # noqa: E731
    for k in (3, 5):
        print(row(f"whitened K 128, mean of {k} nearest", evaluate(taps, shipped, k=k)))
    print(row("whitened K 128, nearest class mean", evaluate(taps, shipped, rule="mean")))
    tied = lambda m: within_class_whitening(train[m], taps.train_targets[m], 128)  # noqa: E731
    print(row("within-class whitened, K 128", evaluate(taps, tied)))
    if args.heads:
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "embedding").mkdir()
            config = replace(EmbeddingConfig(run_dir=scratch), size=128, keep=0)
            for on_whitened in (False, True):
                for weight in (0.5, 0.7, 0.85):
                    fit = with_head(taps, config, weight, on_whitened)
                    inputs = "whitened axes" if on_whitened else "taps"
                    name = f"whitened K 128 ({weight}) + ArcMargin head on the {inputs}"
                    print(row(name, evaluate(taps, fit)))


if __name__ == "__main__":
    main()
