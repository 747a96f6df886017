"""Class probabilities -> label, score, top-k and the defect decision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linewatch.pipeline.model import ModelInfo


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    topk: tuple[tuple[str, float], ...]
    is_defect: bool


def predictions(probs: np.ndarray, info: ModelInfo) -> list[Prediction | None]:
    """One Prediction per row: defect when 1 - P(normal labels) >= the model's threshold;
    None for a row with non-finite scores (a broken model must not pass as "no defect")."""
    normal = [info.labels.index(label) for label in info.normal_labels if label in info.labels]
    defect_mass = 1.0 - probs[:, normal].sum(axis=1)
    k = min(info.topk, probs.shape[1])
    order = np.argsort(-probs, axis=1)[:, :k]
    out: list[Prediction | None] = []
    for row, ranked, mass in zip(probs, order, defect_mass, strict=True):
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
