"""Retention: roll old detections and parts up into hourly summary rows, then delete them."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from linewatch.pipeline.storage.database import insert_for
from linewatch.schemas.tables import Detection, HourlySummary, Part, PartHourly, ShadowDetection

_AGE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> timedelta:
    """'30d', '12h' or '90m' -> timedelta; ValueError names the expected form."""
    match = _AGE.match(text.strip())
    if not match:
        raise ValueError(f"age {text!r} is not like 30d, 12h or 90m")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Pruned:
    detections: int
    parts: int


def prune(engine: Engine, older_than: timedelta, batch: int = 50_000) -> Pruned:
    """Summarise and delete detections and parts captured before now - `older_than`;
    returns how many of each were removed. Shadow-model rows of that age are deleted too
    (a comparison needs both sides)."""
    cutoff = datetime.now(timezone.utc) - older_than
    detections = _prune_detections(engine, cutoff, batch)
    return Pruned(detections, prune_parts(engine, cutoff, batch))


def _prune_detections(engine: Engine, cutoff: datetime, batch: int) -> int:
    removed = 0
    while True:
        with Session(engine) as session, session.begin():
            rows = session.execute(
                select(
                    Detection.id,
                    Detection.camera_id,
                    Detection.captured_at,
                    Detection.model_version,
                    Detection.label,
                    Detection.is_defect,
                )
                .where(Detection.captured_at < cutoff)
                .order_by(Detection.id)
                .limit(batch)
            ).all()
            if not rows:
                session.execute(delete(ShadowDetection).where(ShadowDetection.captured_at < cutoff))
                return removed
            _add_to_summary(session, engine, rows)
            session.execute(delete(Detection).where(Detection.id.in_([r.id for r in rows])))
            removed += len(rows)


def _add_to_summary(session: Session, engine: Engine, rows: list) -> None:  # type: ignore[type-arg]
    frames: Counter[tuple] = Counter()
    defects: Counter[tuple] = Counter()
    for row in rows:
        hour = row.captured_at.replace(minute=0, second=0, microsecond=0)
        key = (row.camera_id, hour, row.model_version, row.label)
        frames[key] += 1
        defects[key] += int(row.is_defect)
    for key, count in frames.items():
        camera_id, hour, version, label = key
        statement = insert_for(engine, HourlySummary).values(
            camera_id=camera_id,
            hour=hour,
            model_version=version,
            label=label,
            frames=count,
            defects=defects[key],
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["camera_id", "hour", "model_version", "label"],
                set_={
                    "frames": HourlySummary.frames + count,
                    "defects": HourlySummary.defects + defects[key],
                },
            )
        )


def prune_parts(engine: Engine, cutoff: datetime, batch: int = 50_000) -> int:
    """Roll parts first captured before `cutoff` into `part_hourly`, delete them; returns
    how many. Counted as the line saw them (a late part is uninspected), as the reports do."""
    removed = 0
    while True:
        with Session(engine) as session, session.begin():
            rows = session.execute(
                select(
                    Part.id,
                    Part.camera_id,
                    Part.captured_at,
                    Part.model_version,
                    Part.label,
                    Part.verdict,
                    Part.late,
                )
                .where(Part.captured_at < cutoff)
                .order_by(Part.id)
                .limit(batch)
            ).all()
            if not rows:
                return removed
            _add_to_part_summary(session, engine, rows)
            session.execute(delete(Part).where(Part.id.in_([r.id for r in rows])))
            removed += len(rows)


def part_counts(verdict: str, late: bool) -> dict[str, int]:
    """A part's contribution to the part summary columns."""
    uninspected = late or verdict == "uninspected"
    return {
        "parts": 1,
        "ok": int(verdict == "ok" and not uninspected),
        "ng": int(verdict == "defect" and not uninspected),
        "uninspected": int(uninspected),
        "late": int(late),
    }


def _add_to_part_summary(session: Session, engine: Engine, rows: list) -> None:  # type: ignore[type-arg]
    totals: dict[tuple, Counter[str]] = {}  # type: ignore[type-arg]
    for row in rows:
        hour = row.captured_at.replace(minute=0, second=0, microsecond=0)
        key = (row.camera_id, hour, row.model_version, row.label)
        totals.setdefault(key, Counter()).update(part_counts(row.verdict, bool(row.late)))
    for (camera_id, hour, version, label), counts in totals.items():
        values = {name: counts[name] for name in ("parts", "ok", "ng", "uninspected", "late")}
        statement = insert_for(engine, PartHourly).values(
            camera_id=camera_id, hour=hour, model_version=version, label=label, **values
        )
        added = {name: getattr(PartHourly, name) + count for name, count in values.items()}
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["camera_id", "hour", "model_version", "label"], set_=added
            )
        )
