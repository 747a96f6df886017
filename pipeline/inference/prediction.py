"""Model outputs -> label, score, top-k, boxes and the defect decision.

Classifier: class probabilities. Detector: boxes; a frame is defective when it has a
box of a defect class scoring at least the model's defect threshold, and its label and
score are then the best such box's, so the alert rule (per camera and class) counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linewatch.pipeline.inference.classifier import ModelInfo
from linewatch.pipeline.inference.detector import Detector, DetectorInfo
from linewatch.pipeline.inference.loading import Model
from linewatch.schemas.messages import Box

CLEAN_LABEL = "clean"  # a detector's frame without any box
MAX_BOXES = 100  # per frame, best first (PaddleDetection's usual keep_top_k)
TOPK = 5


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    topk: tuple[tuple[str, float], ...]
    is_defect: bool
    boxes: tuple[Box, ...] = ()


def predict(model: Model, images: Sequence[np.ndarray]) -> list[Prediction | None]:
    """One Prediction per RGB image (None: the model returned NaN/inf for it)."""
    if isinstance(model, Detector):
        return detections(model.predict(images), model.info)
    return predictions(model.predict(images), model.info)


def predict_with_embeddings(
    model: Model, images: Sequence[np.ndarray]
) -> tuple[list[Prediction | None], np.ndarray | None]:
    """`predict` and, for a classifier whose graph has the embedding output, the views'
    embeddings [N, D] from the same predictor call (else None)."""
    if isinstance(model, Detector):
        return detections(model.predict(images), model.info), None
    probs, embeddings = model.predict_with_embeddings(images)
    return predictions(probs, model.info), embeddings


def predictions(probs: np.ndarray, info: ModelInfo) -> list[Prediction | None]:
    """One Prediction per row: defect when 1 - P(normal labels) >= the model's threshold;
    None for a row with non-finite scores (a broken model must not pass as "no defect")."""
    masses = defect_mass(probs, info)
    k = min(info.topk, probs.shape[1])
    order = np.argsort(-probs, axis=1)[:, :k]
    out: list[Prediction | None] = []
    for row, ranked, mass in zip(probs, order, masses, strict=True):
        if not np.all(np.isfinite(row)):
            out.append(None)
            continue
        topk = tuple((info.labels[i], float(row[i])) for i in ranked)
        is_defect = bool(mass >= info.defect_threshold)
        label, score = topk[0]
        if is_defect and label in info.normal_labels:
            label, score = next((lb, s) for lb, s in topk if lb not in info.normal_labels)
        out.append(Prediction(label=label, score=score, topk=topk, is_defect=is_defect))
    return out


def normal_mass(probs: np.ndarray, info: ModelInfo) -> np.ndarray:
    """P(normal labels) per row."""
    normal = [info.labels.index(label) for label in info.normal_labels if label in info.labels]
    return probs[:, normal].sum(axis=1)


def defect_mass(probs: np.ndarray, info: ModelInfo) -> np.ndarray:
    """1 - P(normal labels) per row: the probability a classifier gives to any defect."""
    return 1.0 - normal_mass(probs, info)


def detections(per_image: Sequence[np.ndarray], info: DetectorInfo) -> list[Prediction | None]:
    """One Prediction per image from its [K, 6] rows (class, score, x1, y1, x2, y2)."""
    return [_detection(rows, info) if np.all(np.isfinite(rows)) else None for rows in per_image]


def _detection(rows: np.ndarray, info: DetectorInfo) -> Prediction:
    kept = rows[rows[:, 1] >= info.draw_threshold]
    kept = kept[np.argsort(-kept[:, 1], kind="stable")][:MAX_BOXES]
    boxes = tuple(_box(row, info.labels) for row in kept)
    topk = _best_per_label(boxes)
    defects = [b for b in boxes if b.label not in info.normal_labels]
    defects = [b for b in defects if b.score >= info.defect_threshold]
    if defects:
        return Prediction(defects[0].label, defects[0].score, topk, True, boxes)
    if boxes:
        return Prediction(boxes[0].label, boxes[0].score, topk, False, boxes)
    below = float(rows[:, 1].max()) if len(rows) else 0.0
    return Prediction(CLEAN_LABEL, 1.0 - below, (), False, ())


def _box(row: np.ndarray, labels: tuple[str, ...]) -> Box:
    index = int(row[0])
    label = labels[index] if index < len(labels) else f"class{index}"
    x1, y1, x2, y2 = (float(value) for value in row[2:6])
    return Box(label, float(row[1]), x1, y1, x2, y2)


def _best_per_label(boxes: tuple[Box, ...]) -> tuple[tuple[str, float], ...]:
    best: dict[str, float] = {}
    for box in boxes:  # best first, so the first box of a label is its best
        best.setdefault(box.label, box.score)
    return tuple(best.items())[:TOPK]
