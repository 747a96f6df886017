"""Exact cosine nearest-neighbour search of a gallery, and the novelty it implies.

A view's novelty is 1 - the cosine similarity to its nearest gallery entry (0: a view
the gallery holds, up to 2: the opposite direction). A part's novelty is the mean of its
`top_views` most novel views, as its defect score is the mean of its top views' scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linewatch.pipeline.gallery.store import Gallery, normalise


@dataclass(frozen=True)
class Matches:
    novelty: np.ndarray  # [N] 1 - cosine similarity to the nearest entry
    labels: list[str]  # [N] the label of the nearest `neighbours` entries (majority, ties: nearest)


def search(gallery: Gallery, queries: np.ndarray, neighbours: int = 1) -> Matches:
    """Each query's novelty and gallery label (a matmul and a partial sort)."""
    queries = normalise(queries)
    if not len(gallery):
        return Matches(np.ones(len(queries), np.float32), [""] * len(queries))
    similarity = queries @ gallery.embeddings.T  # [N, M]
    k = max(1, min(neighbours, len(gallery)))
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(similarity, nearest, axis=1).argsort(axis=1)[:, ::-1]
    nearest = np.take_along_axis(nearest, order, axis=1)
    best = similarity[np.arange(len(queries)), nearest[:, 0]]
    labels = [most_common(gallery.labels[row].tolist())[0] for row in nearest]
    return Matches((1.0 - best).astype(np.float32), labels)


def most_common(labels: Sequence[str]) -> tuple[str, int]:
    """The most common label and its count; on a tie the first one's (pass the labels
    nearest first, so the nearest wins)."""
    counts = Counter(labels)
    top = max(counts.values())
    return next(label for label in labels if counts[label] == top), top


def part_novelty(view_novelties: Sequence[float], top_views: int) -> float:
    """The mean of the part's `top_views` most novel views (0 for a part without views)."""
    if not view_novelties:
        return 0.0
    ranked = sorted(view_novelties, reverse=True)[: max(1, top_views)]
    return float(sum(ranked) / len(ranked))
