"""Issue 26's few-shot and novelty figures with a local descriptor of the defect: does
the trunk's cell where the cell head sees a defect recognise a new class from 10
reviewed photos better than the pooled embedding does?

    python bench/defect_cell_few_shot.py runs/cells4 [--views-per-image 4]

Views: as `bench/cell_features.py` (its cache: `--views-per-image` line views of every
training photo with their masks; the validation photos' canonical line views are the
queries; the gallery = the training views). For each defect class X in turn, nothing
is fitted on X: the cell head is trained without X's views, the whitening maps are
fitted without them, and X's views leave the gallery; then

- novelty AUROC: how well the nearest-entry novelty separates X's queries from the
  other classes' (free included);
- few-shot: 10 (and 5) of X's training photos (their views) put back; 1-NN recall of X
  over 5 draws, and the good queries labelled X per draw (each a false reject).

Embeddings compared (each whitened, shrinkage 0.01 of the mean variance):
- pooled: the head's input (464 pooled taps + the X-less cell head's 12 features),
  standardised, K 128 (the shipped gallery's recipe);
- cell: the trunk's standardised 232-channel vector at the cell with the highest defect
  probability (1 - P(free)) of the X-less cell head, K 64;
- soft cell: the cells' mean weighted by a softmax of 20 × that probability, K 64;
- pooled + cell (weight w): the two unit embeddings side by side, cosine = the
  weighted mean of theirs;
- `--supcon`: also a supervised-contrastive MLP on the pooled features
  (`bench/embedding_variants.supcon_map`, trained without X) beside them.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from linewatch.pipeline.training import data  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cell_features import FREE, LABELS, SIZE, SPLIT, cached  # noqa: E402
from embedding_variants import supcon_map  # noqa: E402

from linewatch.pipeline.gallery.search import search  # noqa: E402
from linewatch.pipeline.gallery.store import Gallery  # noqa: E402
from linewatch.pipeline.training.cell_features import (  # noqa: E402
    CellSettings,
    CellViews,
    cell_features,
    train_cell_head,
)
from linewatch.pipeline.training.efficientnet import PooledAndGrid  # noqa: E402
from linewatch.pipeline.training.embedding import EmbeddingHead  # noqa: E402
from linewatch.pipeline.training.embedding_train import embed  # noqa: E402
from linewatch.pipeline.training.gallery_metrics import novelty_auroc, photo_of  # noqa: E402
from linewatch.pipeline.training.nets import build_network  # noqa: E402
from linewatch.pipeline.training.static_runner import StaticRunner  # noqa: E402
from linewatch.pipeline.training.teacher import canonical_views, extract_all  # noqa: E402

DRAWS = 5
LINE_VIEWS = 3  # per photo in the gallery, beside its canonical view (as the shipped one)
SOFTNESS = 20.0


def whitening(train: np.ndarray, keep: int):  # type: ignore[no-untyped-def]
    """The shipped gallery's map (`EmbeddingHead`, whitened on the first `keep`
    principal axes of `train`, shrinkage 0.01), as a function of feature rows."""
    head = EmbeddingHead(train.shape[1], size=0, keep=keep, whiten=True)
    head.fit_projection(train)
    return lambda x: embed(head, x)


def cell_descriptors(head, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Per view: the standardised cell vector where the defect probability peaks, and
    the softmax-weighted mean of the cells."""
    hard, soft = [], []
    mean = head.channel_mean.numpy()
    scale = head.channel_scale.numpy()
    with paddle.no_grad():
        for start in range(0, len(grids), 256):
            chunk = grids[start : start + 256].astype(np.float32)
            logits = head.cell_logits(paddle.to_tensor(chunk)).numpy()
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            defect = 1 - probs[..., FREE]  # [n, cells]
            cells = (
                chunk.reshape(len(chunk), chunk.shape[1], -1).transpose(0, 2, 1) - mean
            ) * scale
            hard.append(cells[np.arange(len(chunk)), defect.argmax(1)])
            weight = np.exp(SOFTNESS * (defect - defect.max(1, keepdims=True)))
            weight /= weight.sum(1, keepdims=True)
            soft.append((weight[..., None] * cells).sum(1))
    return np.concatenate(hard), np.concatenate(soft)


def figures(
    train: np.ndarray,
    val: np.ndarray,
    targets: np.ndarray,
    photo: np.ndarray,
    val_targets: np.ndarray,
    left_out: int,
) -> tuple[float, dict[int, tuple[float, float]]]:
    """Novelty AUROC of the left-out class, and per shot count (recall, good labelled)."""
    labels = np.array([LABELS[t] for t in targets])
    sources = np.array([f"train:{p}#{i}" for i, p in enumerate(photo)])
    gallery = Gallery.of(train, labels.tolist(), sources.tolist())
    name = LABELS[left_out]
    result = novelty_auroc(gallery, val, np.array([LABELS[t] for t in val_targets]), name)
    photos = photo_of(gallery.sources)
    own = np.unique(photos[gallery.labels == name])
    shots: dict[int, tuple[float, float]] = {}
    for count in (5, 10):
        rng = np.random.default_rng([0, count])
        recalls, good = [], []
        for _ in range(DRAWS):
            chosen = rng.choice(own, size=count, replace=False)
            kept = gallery.where((gallery.labels != name) | np.isin(photos, chosen))
            found = np.array(search(kept, val).labels)
            recalls.append(float((found[val_targets == left_out] == name).mean()))
            good.append(float((found[val_targets == FREE] == name).sum()))
        shots[count] = (float(np.mean(recalls)), float(np.mean(good)))
    return result, shots


def with_canonical(run: Path, cache: dict[str, np.ndarray], per_image: int) -> dict:
    """The cache with each training photo's canonical view first among its views (and
    LINE_VIEWS line views after it): the shipped gallery's make-up, whose canonical
    entries are what a canonical query finds nearest."""
    path = run / "canonical.npz"
    if not path.exists():
        split = data.Split.load(SPLIT)
        network = build_network("EfficientNetLite0_s5", len(LABELS))
        network.backbone.load_torch_weights()
        photos = data.load_images(split.train, data.photo_cache_size(SIZE))
        runner = StaticRunner.of(PooledAndGrid(network.backbone), SIZE, run / "trunk")
        pooled, grid = extract_all(runner, canonical_views(photos, SIZE), run, "canonical")
        np.savez(path, pooled=pooled, grid=grid)
    with np.load(path) as stored:
        pooled, grid = stored["pooled"], stored["grid"]
    photos = len(pooled)
    line = (np.arange(len(cache["photo"])) % per_image) < LINE_VIEWS
    merged = dict(cache)
    merged["train_po"] = np.r_[pooled, cache["train_po"][line]]
    merged["train_grid"] = np.r_[grid, cache["train_grid"][line]]
    merged["targets"] = np.r_[cache["photo_targets"], cache["targets"][line]]
    merged["cells"] = np.r_[
        np.full((photos, cache["cells"].shape[1]), -1, cache["cells"].dtype), cache["cells"][line]
    ]
    merged["photo"] = np.r_[np.arange(photos), cache["photo"][line]]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--views-per-image", type=int, default=4)
    parser.add_argument(
        "--supcon", action="store_true", help="also with a SupCon MLP on the pooled features"
    )
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    cache = with_canonical(
        args.run_dir, cached(args.run_dir, args.views_per_image), args.views_per_image
    )
    targets, photo, val_targets = cache["targets"], cache["photo"], cache["val_targets"]
    views = CellViews(cache["train_grid"], cache["cells"], targets, photo)
    rows: dict[str, dict[str, tuple]] = {}
    for left_out in [i for i in range(len(LABELS)) if i != FREE]:
        name = LABELS[left_out]
        seen = np.flatnonzero(targets != left_out)
        head = train_cell_head(
            views, seen, CellSettings(len(LABELS), FREE), progress=lambda line: None
        )
        extra = cell_features(head, cache["train_grid"])
        val_extra = cell_features(head, cache["val_grid"])
        pooled = np.c_[cache["train_po"], extra]
        val_pooled = np.c_[cache["val_po"], val_extra]
        scale_mean, scale_std = pooled[seen].mean(0), pooled[seen].std(0) + 1e-3
        pooled, val_pooled = (
            (pooled - scale_mean) / scale_std,
            (val_pooled - scale_mean) / scale_std,
        )
        hard, soft = cell_descriptors(head, cache["train_grid"])
        val_hard, val_soft = cell_descriptors(head, cache["val_grid"])
        embed_pooled = whitening(pooled[seen], 128)
        embed_hard = whitening(hard[seen], 64)
        embed_soft = whitening(soft[seen], 64)
        spaces = {
            "pooled (shipped recipe)": (embed_pooled(pooled), embed_pooled(val_pooled)),
            "cell": (embed_hard(hard), embed_hard(val_hard)),
            "soft cell": (embed_soft(soft), embed_soft(val_soft)),
        }
        for w in (0.3, 0.5, 0.7):
            for kind, (train_c, val_c) in (
                ("cell", spaces["cell"]),
                ("soft cell", spaces["soft cell"]),
            ):
                train_p, val_p = spaces["pooled (shipped recipe)"]
                spaces[f"pooled + {kind}, w {w}"] = (
                    np.c_[np.sqrt(1 - w) * train_p, np.sqrt(w) * train_c],
                    np.c_[np.sqrt(1 - w) * val_p, np.sqrt(w) * val_c],
                )
        if args.supcon:
            contrastive = supcon_map(pooled[seen], targets[seen])
            train_s, val_s = contrastive(pooled), contrastive(val_pooled)
            train_p, val_p = spaces["pooled (shipped recipe)"]
            train_c, val_c = spaces["soft cell"]
            for share_p, share_c, share_s in ((0.7, 0.0, 0.3), (0.4, 0.3, 0.3), (0.5, 0.2, 0.3)):
                parts = (
                    (share_p, train_p, val_p),
                    (share_c, train_c, val_c),
                    (share_s, train_s, val_s),
                )
                spaces[f"pooled {share_p} + soft cell {share_c} + SupCon {share_s}"] = (
                    np.concatenate([np.sqrt(w) * t for w, t, _ in parts], axis=1),
                    np.concatenate([np.sqrt(w) * v for w, _, v in parts], axis=1),
                )
        for space, (train, val) in spaces.items():
            rows.setdefault(space, {})[name] = figures(
                train, val, targets, photo, val_targets, left_out
            )
        print(f"{name} done ({time.time() - start:.0f} s)", flush=True)
    classes = [LABELS[i] for i in range(len(LABELS)) if i != FREE]
    print(
        "| embedding | mean AUROC | few-shot recall 5 / 10 | good queries labelled X per "
        f"draw (10 shots, summed) | {' | '.join(f'{c} AUROC / 10-shot' for c in classes)} |"
    )
    print("|---" * (4 + len(classes)) + "|")
    for space, per_class in rows.items():
        aurocs = [per_class[c][0] for c in classes]
        five = np.mean([per_class[c][1][5][0] for c in classes])
        ten = np.mean([per_class[c][1][10][0] for c in classes])
        good = sum(per_class[c][1][10][1] for c in classes)
        cells = " | ".join(f"{per_class[c][0]:.3f} / {per_class[c][1][10][0]:.2f}" for c in classes)
        print(
            f"| {space} | {np.mean(aurocs):.3f} | {five:.2f} / {ten:.2f} | {good:.1f} | {cells} |"
        )
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
