"""The gallery an exported model folder ships (`gallery.npz` + the `Gallery:` section):
randomised line views of the training photos (the line's crop code, as training makes
them) through the exported graph's embedding output, and the novelty threshold chosen on
held-out parts for at most `MAX_FALSE_REJECTS` false rejects of known-class parts.

Held out means: the run's calibration photos (never trained on) searched against the
training photos' gallery when the split has them; else each training photo searched
against the gallery without that photo's fold (5 folds, stratified). Either way the
held-out parts are cut as a line shows them, with the wide line jitter (belts of other
grey levels and textures, shading, scales): with the gallery's own jitter the threshold
sat inside a moving line's good parts (a fine-tuned run's export made 5 of 102 good
parts `unknown`, MODEL_CARD "Issue 23"). The validation photos never set it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from linewatch.pipeline.config import VerdictSettings
from linewatch.pipeline.gallery.search import search
from linewatch.pipeline.gallery.store import GALLERY_FILE, Gallery, save_gallery
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.metrics import part_scores
from linewatch.pipeline.training.teacher import photo_folds

GALLERY_VIEWS = 4  # line views per training photo (and per simulated part)
MAX_FALSE_REJECTS = 0.005
NEIGHBOURS = 1
HELD_OUT_FOLDS = 5
TOP_VIEWS = VerdictSettings().top_views
EMBED_CHUNK = 256
WIDE = "wide line jitter (other belts, textures, shading, scales)"


def photo_line_views(
    items: tuple[tuple[str, int], ...],
    size: int,
    views: int,
    seed: int,
    jitter: line_views.LineJitter | None = None,
) -> np.ndarray:
    """`views` line views (grey uint8 [len(items) * views, size, size]) of each photo, in
    item order: the canonical view (the line's crop without jitter, what `model eval`
    scores) first, then randomised ones from a fixed seed. With `jitter`, every view is
    randomised with it (no canonical view)."""
    rng = np.random.default_rng([seed, 11])
    cache = data.photo_cache_size(size)
    out = []
    for item, _ in items:
        photo = data.load_image(item, cache)
        if jitter is None:
            out.append(line_views.canonical_view(photo, size))
            out += [line_views.line_view(photo, size, rng)[0] for _ in range(views - 1)]
        else:
            out += [line_views.line_view(photo, size, rng, jitter=jitter)[0] for _ in range(views)]
    return np.stack(out)


def embed_views(classifier: Classifier, grey: np.ndarray) -> np.ndarray:
    """The exported graph's embedding output for grey views, as the worker computes it."""
    chunks = []
    for start in range(0, len(grey), EMBED_CHUNK):
        rgb = [np.repeat(view[..., None], 3, axis=2) for view in grey[start : start + EMBED_CHUNK]]
        _, embeddings = classifier.predict_with_embeddings(rgb)
        if embeddings is None:
            raise ValueError("the exported graph has no embedding output (output 1)")
        chunks.append(embeddings)
    return np.concatenate(chunks)


def source_name(item: str, data_root: Path) -> str:
    """An image path relative to the data root (the item itself when it is not under it)."""
    if item.startswith(data.SYNTHETIC_PREFIX):
        return item
    relative = os.path.relpath(os.path.abspath(item), os.path.abspath(data_root))
    return item if relative.startswith("..") else relative


def photo_gallery(
    classifier: Classifier,
    items: tuple[tuple[str, int], ...],
    labels: tuple[str, ...],
    *,
    data_root: Path,
    size: int,
    seed: int,
) -> Gallery:
    """`GALLERY_VIEWS` line views of every photo, embedded, labelled with its class."""
    embeddings = embed_views(classifier, photo_line_views(items, size, GALLERY_VIEWS, seed))
    names = [source_name(item, data_root) for item, _ in items]
    return Gallery.of(
        embeddings,
        [labels[target] for _, target in items for _ in range(GALLERY_VIEWS)],
        [f"train:{name}#{view}" for name in names for view in range(GALLERY_VIEWS)],
    )


def rejecting_threshold(part_novelty: np.ndarray, max_false_rejects: float) -> float:
    """The lowest threshold (6 decimals) at which at most `max_false_rejects` of these
    known parts have novelty >= it."""
    ranked = np.sort(np.asarray(part_novelty, np.float64))[::-1]
    allowed = int(np.floor(max_false_rejects * len(ranked)))
    boundary = ranked[min(allowed, len(ranked) - 1)]
    return float(np.floor(boundary * 1e6 + 1) / 1e6)


def wide_line_embeddings(
    classifier: Classifier, items: tuple[tuple[str, int], ...], size: int, seed: int
) -> np.ndarray:
    """`GALLERY_VIEWS` wide-jitter line views of each photo, embedded (photo order)."""
    views = photo_line_views(items, size, GALLERY_VIEWS, seed, line_views.WIDE_JITTER)
    return embed_views(classifier, views)


def out_of_fold_novelty(
    gallery: Gallery, queries: np.ndarray, targets: np.ndarray, seed: int
) -> np.ndarray:
    """Each query's novelty (GALLERY_VIEWS per training photo, as the gallery's entries)
    against the gallery without its photo's fold."""
    folds = min(HELD_OUT_FOLDS, int(np.bincount(targets).max()))
    fold = np.repeat(photo_folds(targets, max(2, folds), seed), GALLERY_VIEWS)
    novelty = np.zeros(len(queries), np.float32)
    for k in np.unique(fold):
        novelty[fold == k] = search(gallery.where(fold != k), queries[fold == k]).novelty
    return novelty


def gallery_section(
    classifier: Classifier,
    split: data.Split,
    *,
    data_root: Path,
    size: int,
    seed: int,
    out_dir: Path,
    held_out: tuple[np.ndarray, str] | None = None,
) -> dict:
    """Write `out_dir/gallery.npz` of the training photos; returns the `Gallery:` section.
    `held_out`: (part novelties, of what) measured elsewhere (an embedding run's fold
    heads), else the calibration photos' or the out-of-fold photos' here."""
    gallery = photo_gallery(
        classifier, split.train, split.labels, data_root=data_root, size=size, seed=seed
    )
    if held_out is not None:
        parts, held_out_from = held_out
        return _write(out_dir, gallery, parts, held_out_from)
    if split.calibration:
        queries = wide_line_embeddings(classifier, split.calibration, size, seed + 1)
        view_novelty = search(gallery, queries).novelty
        how = f"calibration photos cut with the {WIDE}"
    else:
        targets = np.array([target for _, target in split.train])
        queries = wide_line_embeddings(classifier, split.train, size, seed + 1)
        view_novelty = out_of_fold_novelty(gallery, queries, targets, seed)
        how = f"out-of-fold training photos cut with the {WIDE}"
    photos = len(view_novelty) // GALLERY_VIEWS
    parts, _ = part_scores(
        view_novelty, np.repeat(np.arange(photos), GALLERY_VIEWS), GALLERY_VIEWS, TOP_VIEWS
    )
    return _write(out_dir, gallery, parts, how)


def _write(out_dir: Path, gallery: Gallery, parts: np.ndarray, held_out: str) -> dict:
    threshold = rejecting_threshold(parts, MAX_FALSE_REJECTS)
    save_gallery(out_dir / GALLERY_FILE, gallery)
    return {
        "file": GALLERY_FILE,
        "embedding_size": gallery.size,
        "neighbours": NEIGHBOURS,
        "novelty_threshold": threshold,
        "top_views": TOP_VIEWS,
        "novelty_from": (
            f"{held_out} as line parts ({GALLERY_VIEWS} views, top-{TOP_VIEWS} mean), "
            f"<= {MAX_FALSE_REJECTS:.1%} false rejects"
        ),
        "entries": len(gallery),
        "max_false_rejects": MAX_FALSE_REJECTS,
        "selection_false_reject_rate": round(float((parts >= threshold).mean()), 6),
    }
