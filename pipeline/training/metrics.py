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


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def threshold_for_false_alarms(
    defect_mass: np.ndarray, is_defect: np.ndarray, max_false_alarms: float
) -> float:
    """The threshold (flag when mass >= it) with the most defects flagged while at most
    `max_false_alarms` of the normal images are flagged; inside the range of thresholds
    that give the same counts, the middle (in logit space), for a margin either way."""
    normals = np.sort(defect_mass[~is_defect])[::-1]
    if len(normals) == 0:
        return 0.5
    allowed = int(np.floor(len(normals) * max_false_alarms + 1e-9))
    if allowed >= len(normals):
        return float(np.nextafter(np.float32(0), np.float32(1)))
    excluded = float(normals[allowed])  # the highest normal score that must not be flagged
    above = defect_mass[is_defect & (defect_mass > excluded)]
    upper = float(above.min()) if len(above) else 1 - 1e-6
    middle = (_logit(excluded) + _logit(upper)) / 2
    threshold = float(1 / (1 + np.exp(-middle)))
    return max(threshold, float(np.nextafter(np.float32(excluded), np.float32(1))))


def recall_at_false_alarms(
    defect_mass: np.ndarray, is_defect: np.ndarray, max_false_alarms: float
) -> DefectReport:
    """The best defect recall on these images with at most that share of false alarms."""
    threshold = threshold_for_false_alarms(defect_mass, is_defect, max_false_alarms)
    return defect_report(defect_mass, is_defect, threshold)


def part_scores(
    view_mass: np.ndarray, view_photo: np.ndarray, views_per_part: int, top_views: int
) -> tuple[np.ndarray, np.ndarray]:
    """Parts as the sink judges them, simulated from several scored views of each photo:
    every photo's views are dealt into parts of `views_per_part` (in order, a short
    remainder dropped) and a part scores the mean of its `top_views` highest view scores.
    Returns (part scores, the photo of each part)."""
    scores, photos = [], []
    for photo in np.unique(view_photo):
        mass = view_mass[view_photo == photo]
        for start in range(0, len(mass) - views_per_part + 1, views_per_part):
            top = np.sort(mass[start : start + views_per_part])[::-1][:top_views]
            scores.append(float(top.mean()))
            photos.append(photo)
    return np.array(scores, np.float64), np.array(photos, np.int64)


def operating_curve(defect_mass: np.ndarray, is_defect: np.ndarray) -> np.ndarray:
    """[(false-alarm rate, recall, threshold)] for every distinct threshold, descending."""
    points = []
    for threshold in np.unique(defect_mass)[::-1]:
        report = defect_report(defect_mass, is_defect, float(threshold))
        points.append((report.false_alarm_rate, report.recall, float(threshold)))
    return np.array(points, np.float64).reshape(-1, 3)


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 minimising the negative
    log-likelihood of softmax(logits / T) on held-out images (golden-section on log T)."""

    def nll(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(targets)), targets].mean())

    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))
