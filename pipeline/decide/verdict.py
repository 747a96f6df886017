"""One verdict per part from its stored view results: ok, defect or uninspected.

The rule reads only what the sink has stored (the part's `detections` rows), never
votes kept in memory, so a restarted sink reaches the same verdict for the same part.

- A view's defect score is what the inference worker compares with the model's threshold:
  1 - P(normal labels) for a classifier (from the view's top-k; probability the top-k
  leaves out is shared evenly by the labels it leaves out), the best defect box's score
  for a detector.
- The part is `defect` when the mean of its `top_views` highest view defect scores
  reaches the threshold (`verdict.defect_threshold`, default the model folder's).
- Its class is the label with the largest probability summed over its inferred views:
  the largest defect class for a defective part, the largest of all for an OK one.
- With a model that has a gallery, a part the classifier passes is also `defect` when
  the gallery says so (pipeline/decide/gallery_rule.py: `unknown`, or a class added from
  reviews); the part's novelty and gallery label are kept either way.
- A part none of whose views was inferred (all stale, undecodable or never arrived) is
  `uninspected`; `verdict.on_uninspected` says whether that rejects the part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from linewatch.pipeline.config import VerdictSettings
from linewatch.pipeline.decide.gallery_rule import GalleryRule, gallery_opinion
from linewatch.pipeline.errors import LinewatchError
from linewatch.schemas.decisions import UNINSPECTED_LABEL, ViewResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelLabels:
    """What the rule needs to know about the model: its labels and its threshold."""

    version: str
    labels: tuple[str, ...]
    normal_labels: tuple[str, ...]
    defect_threshold: float
    detector: bool = False  # top-k holds box scores, not class probabilities
    gallery: GalleryRule | None = None  # the model folder's gallery section, if any


@dataclass(frozen=True)
class Verdict:
    verdict: str  # ok | defect | uninspected
    label: str
    score: float  # the mean of the top views' defect scores (0 when uninspected)
    class_scores: dict[str, float]  # label -> mean probability over the inferred views
    best: ViewResult | None  # the view with the highest defect score (the evidence)
    views_inferred: int  # stored views, any status
    model_version: str
    novelty: float | None = None  # a model with a gallery: the part's novelty
    gallery_label: str | None = None  # and its views' nearest gallery class


def model_labels(folder: Path) -> ModelLabels:
    """The rule's view of a classifier or detector folder (read without paddle)."""
    from linewatch.pipeline.inference.classifier import ModelInfo
    from linewatch.pipeline.inference.detector import DetectorInfo
    from linewatch.pipeline.inference.loading import describe_model

    info = describe_model(folder)
    section = info.gallery if isinstance(info, ModelInfo) else None
    return ModelLabels(
        version=info.version,
        labels=tuple(info.labels),
        normal_labels=tuple(info.normal_labels),
        defect_threshold=float(info.defect_threshold),
        detector=isinstance(info, DetectorInfo),
        gallery=GalleryRule(section.novelty_threshold, section.top_views) if section else None,
    )


class ModelCatalog:
    """The rule's view of each model the line's views may come from, by version: the
    configured folder, and the one the line runs now (switching.running_model_dir, read
    again when a view names a version not seen yet), so a part inferred by a
    swapped-in model is judged with that model's labels and threshold."""

    def __init__(self, default: ModelLabels, running: Callable[[], Path]) -> None:
        self.default = default
        self._running = running
        self._known = {default.version: default}
        self._unknown: set[str] = set()

    def for_views(self, views: Sequence[ViewResult]) -> ModelLabels:
        version = _version(views, self.default)
        if version not in self._known and version not in self._unknown:
            self._learn(version)
        return self._known.get(version, self.default)

    def _learn(self, version: str) -> None:
        folder = self._running()
        try:
            model: ModelLabels | None = model_labels(folder)
        except LinewatchError as exc:
            log.warning("the running model folder %s cannot be read: %s", folder, exc)
            model = None
        if model is not None:
            self._known[model.version] = model
        if version not in self._known:
            self._unknown.add(version)
            log.warning(
                "views of model version %s, which is neither the configured model (%s) nor "
                "the running one: judged with the configured model's threshold",
                version,
                self.default.version,
            )


def class_probabilities(view: ViewResult, model: ModelLabels) -> dict[str, float]:
    """A view's score per label; for a classifier the mass its top-k leaves out is shared
    evenly by the labels left out, so the probabilities sum to 1 again."""
    scores = dict(view.topk)
    if model.detector:
        return scores
    missing = [label for label in model.labels if label not in scores]
    if missing:
        rest = max(0.0, 1.0 - sum(scores.values())) / len(missing)
        scores.update({label: rest for label in missing})
    return scores


def view_defect_score(view: ViewResult, model: ModelLabels) -> float:
    scores = class_probabilities(view, model)
    if model.detector:
        return max((s for lb, s in scores.items() if lb not in model.normal_labels), default=0.0)
    normal = sum(scores.get(label, 0.0) for label in model.normal_labels)
    return min(1.0, max(0.0, 1.0 - normal))


def decide(views: Sequence[ViewResult], model: ModelLabels, settings: VerdictSettings) -> Verdict:
    """The part's verdict from all its stored views (any status)."""
    inferred = [view for view in views if view.inferred]
    version = _version(views, model)
    if not inferred:
        return Verdict("uninspected", UNINSPECTED_LABEL, 0.0, {}, None, len(views), version)
    scored = sorted(
        ((view_defect_score(view, model), view) for view in inferred),
        key=lambda pair: (-pair[0], pair[1].view_index),
    )
    top = [score for score, _ in scored[: settings.top_views]]
    score = sum(top) / len(top)
    threshold = settings.defect_threshold or model.defect_threshold
    verdict = "defect" if score >= threshold else "ok"
    classes = _class_scores(inferred, model)
    label = _label(classes, model, defective=verdict == "defect")
    best = scored[0][1]
    gallery = gallery_opinion(inferred, _rule(model, settings), model.labels, model.normal_labels)
    if verdict == "ok" and gallery.ng_label is not None:  # the classifier stays primary
        verdict, label, best = "defect", gallery.ng_label, gallery.evidence or best
    return Verdict(
        verdict, label, score, classes, best, len(views), version, gallery.novelty, gallery.label
    )


def _rule(model: ModelLabels, settings: VerdictSettings) -> GalleryRule | None:
    """The model's gallery rule with the line's `verdict.novelty_threshold`, if set."""
    if model.gallery is None or settings.novelty_threshold is None:
        return model.gallery
    return replace(model.gallery, novelty_threshold=settings.novelty_threshold)


def _class_scores(views: Sequence[ViewResult], model: ModelLabels) -> dict[str, float]:
    totals: dict[str, float] = {}
    for view in views:
        for label, probability in class_probabilities(view, model).items():
            totals[label] = totals.get(label, 0.0) + probability
    return {label: round(total / len(views), 6) for label, total in totals.items()}


def _label(classes: dict[str, float], model: ModelLabels, defective: bool) -> str:
    candidates = {
        label: score
        for label, score in classes.items()
        if not defective or label not in model.normal_labels
    }
    if not candidates:  # a defective part whose top-k named no defect class
        return "defect"
    return max(sorted(candidates), key=lambda label: candidates[label])


def _version(views: Sequence[ViewResult], model: ModelLabels) -> str:
    """The model version most of the part's views were inferred with (the configured
    model's when there are none): the parts row's key with camera and part."""
    versions = [view.model_version for view in views if view.inferred and view.model_version]
    if not versions:
        return model.version
    return max(sorted(set(versions)), key=versions.count)
