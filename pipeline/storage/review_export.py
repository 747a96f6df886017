"""`linewatch dataset export --reviewed`: people's verdicts as training data; and the
reviewed crops `linewatch gallery add --from-reviews` adds to the running model's gallery.

Writes an ImageFolder (one folder per class, the class a reviewer gave) of the evidence
crops of reviewed parts, using each part's latest review, plus `manifest.csv` naming
every file with its part, the line's verdict and the reviewer's. The crops are the
line's own crops (pipeline/video/crop.py), so `linewatch train --data DIR` sees what
the line shows the model."""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, undefer

from linewatch.schemas.tables import Part, PartReview

MANIFEST = "manifest.csv"
COLUMNS = (
    "file",
    "label",
    "verdict",
    "part",
    "camera_id",
    "part_id",
    "model_version",
    "machine_verdict",
    "machine_label",
    "score",
    "reviewer",
    "reviewed_at",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ExportSummary:
    files: int
    per_class: dict[str, int]
    without_crop: int


@dataclass(frozen=True)
class ReviewedCrop:
    """A reviewed part's evidence crop (None: the part has none) and its latest label."""

    camera_id: str
    part_id: int
    label: str
    evidence: bytes | None

    @property
    def source(self) -> str:
        """Its gallery entry's source (pipeline/gallery/store.py)."""
        return f"review:{self.camera_id}/{self.part_id}"


def reviewed_crops(
    engine: Engine, since: datetime | None = None, label: str | None = None
) -> list[ReviewedCrop]:
    """Each reviewed part's crop with its latest review's label (of `label` only when
    given), for parts captured since `since`, oldest part first."""
    query = _reviewed(since).options(undefer(Part.evidence))
    if label is not None:
        query = query.where(PartReview.label == label)
    with Session(engine) as session:
        rows = session.execute(query).all()
        return [ReviewedCrop(p.camera_id, p.part_id, r.label, p.evidence) for r, p in rows]


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "unnamed"


def _reviewed(since: datetime | None):  # type: ignore[no-untyped-def]
    latest = select(func.max(PartReview.id)).group_by(PartReview.part_row_id)
    query = (
        select(PartReview, Part)
        .join(Part, Part.id == PartReview.part_row_id)
        .where(PartReview.id.in_(latest))
        .order_by(Part.id)
    )
    return query.where(Part.captured_at >= since) if since is not None else query


def export_reviewed(engine: Engine, out: Path, since: datetime | None = None) -> ExportSummary:
    """Write the reviewed crops under `out` (created) and `out/manifest.csv`."""
    out.mkdir(parents=True, exist_ok=True)
    per_class: Counter[str] = Counter()
    missing = 0
    with Session(engine) as session, (out / MANIFEST).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for review, part in session.execute(_reviewed(since)).tuples():
            if not part.evidence:
                missing += 1
                continue
            folder = out / _safe(review.label)
            folder.mkdir(exist_ok=True)
            name = f"{_safe(part.camera_id)}-p{part.part_id}-r{part.id}.jpg"
            (folder / name).write_bytes(part.evidence)
            per_class[review.label] += 1
            writer.writerow(_manifest_row(f"{folder.name}/{name}", review, part))
    return ExportSummary(sum(per_class.values()), dict(sorted(per_class.items())), missing)


def _manifest_row(file: str, review: PartReview, part: Part) -> tuple[object, ...]:
    return (
        file,
        review.label,
        review.verdict,
        part.id,
        part.camera_id,
        part.part_id,
        part.model_version,
        review.machine_verdict,
        review.machine_label,
        f"{part.score:.4f}",
        review.reviewer,
        review.reviewed_at.isoformat(),
    )
