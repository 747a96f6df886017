"""Defect reports over a time window, read from the report_* views (migration 0003).

The views combine raw detections with the hourly summary rows that `linewatch db prune`
leaves, so a window reaching into pruned history stays complete. Windows are whole UTC
hours: an hour bucket is in the window when it starts in [floor_hour(since), until).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import BigInteger, DateTime, Engine, String, column, func, select, table
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import ColumnElement, TableClause

from linewatch.pipeline import migrate, storage
from linewatch.pipeline.errors import ServiceUnavailable
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.retention import parse_age

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?$")


@dataclass(frozen=True)
class Window:
    """UTC bounds (aware datetimes) and an optional camera."""

    since: datetime
    until: datetime
    camera: str | None = None


@dataclass(frozen=True)
class CameraHour:
    camera_id: str
    hour: datetime
    shift_start: datetime
    shift: str
    frames: int
    defects: int

    @property
    def defect_rate(self) -> float:
        return self.defects / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class CameraShift:
    camera_id: str
    shift_start: datetime
    shift: str  # "06-14", "14-22" or "22-06" (UTC)
    frames: int
    defects: int

    @property
    def defect_rate(self) -> float:
        return self.defects / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class ClassRate:
    """Frames labelled `label`; `rate` is their share of all inferred frames in the window."""

    label: str
    frames: int
    defects: int
    rate: float


@dataclass(frozen=True)
class ModelVersionStats:
    model_version: str
    frames: int
    defects: int
    per_class: tuple[tuple[str, int], ...]  # (label, frames), most frequent first

    @property
    def defect_rate(self) -> float:
        return self.defects / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class Report:
    window: Window
    camera_hours: list[CameraHour]
    camera_shifts: list[CameraShift]
    class_rates: list[ClassRate]
    top_hours: list[CameraHour]
    model_versions: list[ModelVersionStats]

    @property
    def frames(self) -> int:
        return sum(row.frames for row in self.class_rates)

    @property
    def defects(self) -> int:
        return sum(row.defects for row in self.class_rates)


_TYPES = {"hour": DateTime, "shift_start": DateTime, "frames": BigInteger, "defects": BigInteger}


def _view(name: str, *names: str) -> TableClause:
    return table(name, *(column(n, _TYPES.get(n, String)()) for n in names))


HOURLY = _view("report_hourly", "camera_id", "hour", "model_version", "label", "frames", "defects")
CLASS_HOUR = _view("report_class_hour", "camera_id", "hour", "label", "frames", "defects")
CAMERA_HOUR = _view(
    "report_camera_hour", "camera_id", "hour", "shift_start", "shift", "frames", "defects"
)


def parse_time(text: str, now: datetime) -> datetime:
    """'24h' / '30d' / '90m' before `now`, or a UTC date / date-time like 2026-11-01[T06:00]."""
    text = text.strip()
    if _DATE.match(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date: {exc}") from None
        return moment.replace(tzinfo=timezone.utc)
    try:
        return now - parse_age(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an age like 24h, 7d or a date like 2026-11-01") from None


def open_for_reports(url: str) -> Engine:
    """An engine on an existing database at this linewatch's schema (never creates one)."""
    safe = redact_url(url)
    engine = storage.create_database_engine(url)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and not Path(database).exists():
        raise ServiceUnavailable(f"no database file at {database} ({safe})")
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except OperationalError as exc:
        raise ServiceUnavailable(
            f"cannot reach database {safe} ({str(exc.orig).strip().splitlines()[0]})"
        ) from None
    if current != head:
        raise migrate.SchemaOutOfDate(
            f"database {safe} has schema revision {current or 'none'}, reports need {head}; "
            "back it up, then run `linewatch db upgrade`"
        )
    return engine


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc)


def _where(view: TableClause, window: Window) -> list[ColumnElement[bool]]:
    since = _naive(window.since).replace(minute=0, second=0, microsecond=0)
    conditions = [view.c.hour >= since, view.c.hour < _naive(window.until)]
    if window.camera is not None:
        conditions.append(view.c.camera_id == window.camera)
    return conditions


def _camera_hour(row: Sequence) -> CameraHour:  # type: ignore[type-arg]
    camera_id, hour, shift_start, shift, frames, defects = row
    return CameraHour(camera_id, _utc(hour), _utc(shift_start), shift, int(frames), int(defects))


def camera_hours(engine: Engine, window: Window) -> list[CameraHour]:
    """Frames and defects per camera per hour, in time order."""
    view = CAMERA_HOUR
    query = select(view).where(*_where(view, window)).order_by(view.c.hour, view.c.camera_id)
    with engine.connect() as connection:
        return [_camera_hour(row) for row in connection.execute(query)]


def camera_shifts(engine: Engine, window: Window) -> list[CameraShift]:
    """Frames and defects per camera per shift (edge shifts hold only their in-window hours)."""
    view = CAMERA_HOUR
    keys = (view.c.camera_id, view.c.shift_start, view.c.shift)
    query = (
        select(*keys, func.sum(view.c.frames), func.sum(view.c.defects))
        .where(*_where(view, window))
        .group_by(*keys)
        .order_by(view.c.shift_start, view.c.camera_id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [CameraShift(c, _utc(start), s, int(f), int(d)) for c, start, s, f, d in rows]


def class_rates(engine: Engine, window: Window) -> list[ClassRate]:
    """Per label: frames, defects and share of all inferred frames, most frequent first."""
    view = CLASS_HOUR
    query = (
        select(view.c.label, func.sum(view.c.frames), func.sum(view.c.defects))
        .where(*_where(view, window))
        .group_by(view.c.label)
    )
    with engine.connect() as connection:
        rows = [(label, int(f), int(d)) for label, f, d in connection.execute(query)]
    total = sum(frames for _, frames, _ in rows)
    rows.sort(key=lambda row: (-row[1], row[0]))
    return [ClassRate(label, f, d, f / total) for label, f, d in rows]


def top_hours(engine: Engine, window: Window, limit: int = 10) -> list[CameraHour]:
    """The camera-hours with most defects (ties: earlier first)."""
    view = CAMERA_HOUR
    query = (
        select(view)
        .where(*_where(view, window), view.c.defects > 0)
        .order_by(view.c.defects.desc(), view.c.hour, view.c.camera_id)
        .limit(limit)
    )
    with engine.connect() as connection:
        return [_camera_hour(row) for row in connection.execute(query)]


def model_versions(engine: Engine, window: Window) -> list[ModelVersionStats]:
    """Per model version: frames, defects and frames per label (to compare a shadow model)."""
    view = HOURLY
    keys = (view.c.model_version, view.c.label)
    query = (
        select(*keys, func.sum(view.c.frames), func.sum(view.c.defects))
        .where(*_where(view, window))
        .group_by(*keys)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    stats = []
    for version in sorted({row[0] for row in rows}):
        mine = sorted(((lb, int(f), int(d)) for v, lb, f, d in rows if v == version), key=_by_count)
        frames, defects = sum(r[1] for r in mine), sum(r[2] for r in mine)
        stats.append(ModelVersionStats(version, frames, defects, tuple((r[0], r[1]) for r in mine)))
    return stats


def _by_count(row: tuple[str, int, int]) -> tuple[int, str]:
    return -row[1], row[0]


def build_report(engine: Engine, window: Window, top: int = 10) -> Report:
    return Report(
        window=window,
        camera_hours=camera_hours(engine, window),
        camera_shifts=camera_shifts(engine, window),
        class_rates=class_rates(engine, window),
        top_hours=top_hours(engine, window, top),
        model_versions=model_versions(engine, window),
    )
