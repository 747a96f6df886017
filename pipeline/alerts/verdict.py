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
- A part none of whose views was inferred (all stale, undecodable or never arrived) is
  `uninspected`; `verdict.on_uninspected` says whether that rejects the part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from linewatch.pipeline.config import VerdictSettings
from linewatch.pipeline.errors import LinewatchError

log = logging.getLogger(__name__)

UNINSPECTED_LABEL = "uninspected"


@dataclass(frozen=True)
class ModelLabels:
    """What the rule needs to know about the model: its labels and its threshold."""

    version: str
    labels: tuple[str, ...]
    normal_labels: tuple[str, ...]
    defect_threshold: float
    detector: bool = False  # top-k holds box scores, not class probabilities


@dataclass(frozen=True)
class ViewResult:
    """One stored view of a part (a `detections` row with its part_id)."""

    view_index: int
    seq: int
    pts: float
    status: str  # ok | stale | undecodable | invalid-output
    model_version: str
    topk: tuple[tuple[str, float], ...]
    box: tuple[int, int, int, int] | None = None  # the part's box in frame pixels
    evidence: bytes | None = field(default=None, repr=False)  # crop JPEG (defect views)

    @property
    def inferred(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # ok | defect | uninspected
    label: str
    score: float  # the mean of the top views' defect scores (0 when uninspected)
    class_scores: dict[str, float]  # label -> mean probability over the inferred views
    best: ViewResult | None  # the view with the highest defect score (the evidence)
    views_inferred: int  # stored views, any status
    model_version: str

    def is_ng(self, settings: VerdictSettings) -> bool:
        """NG parts raise an alert and count in the line alarm's NG rate."""
        if self.verdict == "uninspected":
            return settings.on_uninspected == "reject"
        return self.verdict == "defect"


def model_labels(folder: Path) -> ModelLabels:
    """The rule's view of a classifier or detector folder (read without paddle)."""
    from linewatch.pipeline.inference.detector import DetectorInfo
    from linewatch.pipeline.inference.loading import describe_model

    info = describe_model(folder)
    return ModelLabels(
        version=info.version,
        labels=tuple(info.labels),
        normal_labels=tuple(info.normal_labels),
        defect_threshold=float(info.defect_threshold),
        detector=isinstance(info, DetectorInfo),
    )


class ModelCatalog:
    """The rule's view of each model the line's views may come from, by version: the
    configured folder, and the one `linewatch model use` asked the workers to switch to
    (read again when a view names a version not seen yet), so a part inferred by a
    swapped-in model is judged with that model's labels and threshold."""

    def __init__(self, default: ModelLabels, requested: Callable[[], Path | None]) -> None:
        self.default = default
        self._requested = requested
        self._known = {default.version: default}
        self._unknown: set[str] = set()

    def for_views(self, views: Sequence[ViewResult]) -> ModelLabels:
        version = _version(views, self.default)
        if version not in self._known and version not in self._unknown:
            self._learn(version)
        return self._known.get(version, self.default)

    def _learn(self, version: str) -> None:
        folder = self._requested()
        try:
            model = model_labels(folder) if folder else None
        except LinewatchError as exc:
            log.warning("requested model folder %s cannot be read: %s", folder, exc)
            model = None
        if model is not None:
            self._known[model.version] = model
        if version not in self._known:
            self._unknown.add(version)
            log.warning(
                "views of model version %s, which is neither the configured model (%s) nor "
                "the requested one: judged with the configured model's threshold",
                version,
                self.default.version,
            )


def parse_topk(text: str) -> tuple[tuple[str, float], ...]:
    """The detections row's `topk` text (`label:score,label:score`)."""
    pairs = []
    for item in filter(None, text.split(",")):
        label, _, score = item.rpartition(":")
        pairs.append((label, float(score)))
    return tuple(pairs)


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
    return Verdict(verdict, label, score, classes, scored[0][1], len(views), version)


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
