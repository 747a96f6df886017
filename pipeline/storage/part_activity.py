"""Each camera's recent parts as the line saw them: parts per minute, NG rate, last NG part
(`linewatch status` and the retained MQTT camera status).

A part is NG as it was sent to the line: the caller gives the NG rule's SQL form
(pipeline/decide/ng_rule.py `ng_sql`), since storage sits below the rule's room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from linewatch.schemas.tables import Part

WINDOW_S = 60.0  # parts/min and NG rate are over the last minute


@dataclass(frozen=True)
class Activity:
    parts: int  # parts first seen in the window that have a verdict
    ng: int

    @property
    def ng_rate(self) -> float | None:
        return self.ng / self.parts if self.parts else None


@dataclass(frozen=True)
class LastNg:
    part_id: int
    label: str
    captured_at: datetime


def recent(
    engine: Engine, is_ng: ColumnElement[bool], now: datetime | None = None
) -> dict[str, Activity]:
    """Per camera with parts in the last WINDOW_S: parts and NG parts (`is_ng`)."""
    since = (now or datetime.now(timezone.utc)) - timedelta(seconds=WINDOW_S)
    ng = func.sum(case((is_ng, 1), else_=0))
    query = (
        select(Part.camera_id, func.count(), func.coalesce(ng, 0))
        .where(Part.captured_at >= since)
        .group_by(Part.camera_id)
    )
    with engine.connect() as connection:
        return {camera: Activity(n, int(k)) for camera, n, k in connection.execute(query)}


def last_ng(
    engine: Engine, cameras: Sequence[str], is_ng: ColumnElement[bool]
) -> dict[str, LastNg]:
    """Each camera's latest NG part (by first capture; the camera + time index)."""
    found: dict[str, LastNg] = {}
    with Session(engine) as session:
        for camera in cameras:
            row = session.execute(
                select(Part.part_id, Part.verdict, Part.late, Part.label, Part.captured_at)
                .where(Part.camera_id == camera, is_ng)
                .order_by(Part.captured_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                part_id, verdict, late, label, at = row
                shown = "uninspected" if late or verdict == "uninspected" else label
                found[camera] = LastNg(int(part_id), shown, _utc(at))
    return found


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
