"""Classification metrics: confusion matrix, per-class P/R/F1, macro-F1, defect recall."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassReport:
    labels: tuple[str, ...]
    confusion: np.ndarray  # [true, predicted]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.confusion.sum()))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def class_report(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> ClassReport:
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    hits = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return ClassReport(labels, matrix, precision, recall, f1, support)


@dataclass(frozen=True)
class DefectReport:
    threshold: float
    recall: float  # defective images flagged
    false_alarm_rate: float  # normal images flagged


def defect_report(defect_mass: np.ndarray, is_defect: np.ndarray, threshold: float) -> DefectReport:
    """Binary defect-vs-normal at `threshold` on 1 - P(normal)."""
    flagged = defect_mass >= threshold
    defects, normals = is_defect.sum(), (~is_defect).sum()
    recall = float((flagged & is_defect).sum() / defects) if defects else 1.0
    false_alarms = float((flagged & ~is_defect).sum() / normals) if normals else 0.0
    return DefectReport(float(threshold), recall, false_alarms)


def pick_threshold(defect_mass: np.ndarray, is_defect: np.ndarray, min_recall: float) -> float:
    """The largest threshold whose defect recall is at least `min_recall` (fewest alarms)."""
    scores = np.sort(defect_mass[is_defect])
    if len(scores) == 0:
        return 0.5
    allowed_misses = int(np.floor(len(scores) * (1 - min_recall) + 1e-9))
    return float(scores[allowed_misses])
