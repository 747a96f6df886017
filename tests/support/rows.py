"""Rows in and out of SQL for tests: parts rows as the sink writes them, detection counts and a
frame's stored boxes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from linewatch.schemas.messages import Box
from linewatch.schemas.tables import Detection, DetectionBox, Part


def count_detections(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Detection)) or 0)


def frame_boxes(engine: Engine, camera_id: str, seq: int, model_version: str) -> list[Box]:
    """A stored frame's boxes, best first."""
    with Session(engine) as session:
        rows = session.scalars(
            select(DetectionBox)
            .join(Detection, Detection.id == DetectionBox.detection_id)
            .where(
                Detection.camera_id == camera_id,
                Detection.seq == seq,
                Detection.model_version == model_version,
            )
            .order_by(DetectionBox.box_index)
        ).all()
    return [Box(r.label, r.score, r.x1, r.y1, r.x2, r.y2) for r in rows]


def part_row(
    camera_id: str,
    part_id: int,
    captured_at: datetime,
    verdict: str,
    label: str,
    model_version: str = "v1",
    late: bool = False,
) -> dict[str, object]:
    """A `parts` row as the sink writes it (times derived from `captured_at`, UTC)."""
    ts = int(captured_at.timestamp() * 1e9)
    return {
        "camera_id": camera_id,
        "part_id": part_id,
        "first_seq": part_id * 10,
        "last_seq": part_id * 10 + 4,
        "first_pts": 0.0,
        "last_pts": 0.4,
        "first_capture_ts": ts,
        "last_capture_ts": ts + 400_000_000,
        "captured_at": captured_at,
        "views_sent": 3,
        "views_inferred": 0 if verdict == "uninspected" else 3,
        "verdict": verdict,
        "label": label,
        "score": 0.9 if verdict == "defect" else 0.1,
        "class_scores": "{}",
        "model_version": model_version,
        "end_reason": "left",
        "decided_ts": ts + (3_000_000_000 if late else 600_000_000),
        "deadline_ts": ts + 2_000_000_000,
        "late": late,
    }


def write_parts(engine: Engine, rows: Iterable[dict[str, object]]) -> None:
    """Insert `parts` rows (from part_row) in one transaction."""
    with engine.begin() as connection:
        connection.execute(Part.__table__.insert(), list(rows))
