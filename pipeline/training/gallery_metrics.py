"""Gallery figures on held-out views: 1-NN macro-F1, leave-one-class-out novelty AUROC
per defect class, and few-shot recall (a class removed, then `n` of its gallery photos
added back, as reviewed parts are). `linewatch model eval` and `linewatch
train-embedding --leave-out-each` both report these."""

from __future__ import annotations

import numpy as np

from linewatch.pipeline.gallery.search import search
from linewatch.pipeline.gallery.store import Gallery
from linewatch.pipeline.training.metrics import class_report

FEW_SHOT = (5, 10)
FEW_SHOT_DRAWS = 5  # random choices of the n photos, averaged


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `positive` (ties count half)."""
    scores = np.asarray(scores, np.float64)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def photo_of(sources: np.ndarray) -> np.ndarray:
    """The photo of each gallery entry: its source without the `#view` suffix."""
    return np.array([str(source).rsplit("#", 1)[0] for source in sources])


def nn_macro_f1(gallery: Gallery, queries: np.ndarray, truth: list[str]) -> float:
    labels = tuple(sorted(set(gallery.labels.tolist()) | set(truth)))
    predicted = search(gallery, queries).labels
    y_true = np.array([labels.index(label) for label in truth])
    y_pred = np.array([labels.index(label) for label in predicted])
    present = tuple(label for label in labels if label in truth)
    report = class_report(y_true, y_pred, labels)
    return float(np.mean([report.f1[labels.index(label)] for label in present]))


def novelty_auroc(gallery: Gallery, queries: np.ndarray, truth: np.ndarray, left_out: str) -> float:
    """`left_out` removed from the gallery: how well the nearest-entry novelty separates
    its queries from the other (known) classes' queries."""
    novelty = search(gallery.where(gallery.labels != left_out), queries).novelty
    return auroc(novelty, truth == left_out)


def few_shot_recall(
    gallery: Gallery, queries: np.ndarray, truth: np.ndarray, label: str, shots: int, seed: int
) -> float:
    """1-NN recall of `label` on its queries with only `shots` of its photos in the
    gallery (all their views), averaged over FEW_SHOT_DRAWS random choices."""
    photos = photo_of(gallery.sources)
    own = np.unique(photos[gallery.labels == label])
    rng = np.random.default_rng([seed, shots])
    recalls = []
    for _ in range(FEW_SHOT_DRAWS):
        chosen = rng.choice(own, size=min(shots, len(own)), replace=False)
        kept = gallery.where((gallery.labels != label) | np.isin(photos, chosen))
        found = np.array(search(kept, queries[truth == label]).labels)
        recalls.append(float((found == label).mean()))
    return float(np.mean(recalls))


def gallery_figures(
    gallery: Gallery,
    queries: np.ndarray,
    truth: list[str],
    defect_labels: list[str],
    seed: int = 0,
) -> dict:
    """{nn_macro_f1, novelty_auroc: {class: …}, few_shot_recall: {"5": {class: …}, …},
    mean_novelty_auroc, queries, entries} for query embeddings with true labels."""
    truth_array = np.asarray(truth)
    present = [label for label in defect_labels if (truth_array == label).any()]
    aurocs = {c: novelty_auroc(gallery, queries, truth_array, c) for c in present}
    few_shot = {
        str(n): {
            c: few_shot_recall(gallery, queries, truth_array, c, n, seed)
            for c in present
            if (gallery.labels == c).any()
        }
        for n in FEW_SHOT
    }
    return {
        "nn_macro_f1": nn_macro_f1(gallery, queries, truth),
        "novelty_auroc": aurocs,
        "mean_novelty_auroc": float(np.mean(list(aurocs.values()))) if aurocs else float("nan"),
        "few_shot_recall": few_shot,
        "queries": len(truth),
        "entries": len(gallery),
    }
