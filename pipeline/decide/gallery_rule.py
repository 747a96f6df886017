"""The gallery's opinion of a part, next to the classifier's (which stays primary).

From the part's inferred views' novelty and nearest gallery class (stored per view by
the inference worker):

- the part's novelty is `part_novelty` over its views (the mean of the `top_views` most
  novel, as the defect score is the mean of the top views' defect scores);
- its gallery label is the defect class most of its views are nearest to when at least
  `top_views` of them (all, for a part with fewer views) agree on it, else the class most
  of its views are nearest to (ties: the nearest view's);
- a part the classifier passes is NG as `unknown` when its novelty reaches the gallery's
  `novelty_threshold`, or as its gallery label when that is a class the classifier does
  not know (one added from reviews, `linewatch gallery add`).

A model without a gallery has no opinion: novelty and gallery label stay None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from linewatch.pipeline.gallery.search import most_common, part_novelty
from linewatch.schemas.decisions import UNKNOWN_LABEL, ViewResult


@dataclass(frozen=True)
class GalleryRule:
    """What the rule needs from the model folder's `Gallery:` section."""

    novelty_threshold: float
    top_views: int


@dataclass(frozen=True)
class GalleryOpinion:
    novelty: float | None
    label: str | None  # the part's gallery label
    ng_label: str | None  # the label the part is NG as by the gallery; None: not NG by it
    evidence: ViewResult | None  # the view that shows it best


NO_OPINION = GalleryOpinion(None, None, None, None)


def gallery_opinion(
    views: Sequence[ViewResult],
    rule: GalleryRule | None,
    labels: tuple[str, ...],
    normal_labels: tuple[str, ...],
) -> GalleryOpinion:
    """The gallery's opinion of a part from its inferred views (`labels`: the classes the
    classifier knows)."""
    searched = [v for v in views if v.novelty is not None and v.gallery_label is not None]
    if rule is None or not searched:
        return NO_OPINION
    novelty = part_novelty([float(v.novelty or 0.0) for v in searched], rule.top_views)
    label = part_label(searched, normal_labels, rule.top_views)
    if novelty >= rule.novelty_threshold:
        most_novel = max(searched, key=lambda v: (v.novelty or 0.0, v.evidence is not None))
        return GalleryOpinion(novelty, label, UNKNOWN_LABEL, most_novel)
    if label not in labels and label not in normal_labels:
        nearest = [v for v in searched if v.gallery_label == label]
        best = min(nearest, key=lambda v: (v.evidence is None, v.novelty or 0.0))
        return GalleryOpinion(novelty, label, label, best)
    return GalleryOpinion(novelty, label, None, None)


def part_label(views: Sequence[ViewResult], normal_labels: tuple[str, ...], top_views: int) -> str:
    """The defect class at least `top_views` views are nearest to, else the majority."""
    ordered = sorted(views, key=lambda v: v.novelty or 0.0)  # nearest first: wins ties
    labels = [str(v.gallery_label) for v in ordered]
    defects = [label for label in labels if label not in normal_labels]
    if defects:
        label, count = most_common(defects)
        if count >= min(top_views, len(labels)):
            return label
    return most_common(labels)[0]
