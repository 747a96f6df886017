"""Defect reports over a time window: parts from the `report_part_rows` view (migration
0008) and frames from the `report_rows` view (migration 0003).

`report_rows` combines raw detections with the hourly summary rows that `linewatch db prune`
leaves, so a window reaching into pruned history stays complete; the window is applied to
its `at` column before aggregating, which reaches the captured_at indexes. Windows are whole
UTC hours: [floor_hour(since), ceil_hour(until)), the same before and after pruning.
Shifts are 3 x 8 h in UTC (06-14, 14-22, 22-06; a night shift belongs to the day it starts).
Parts are counted as the line saw them: a part decided after its deadline was sent as
`uninspected` and counts so (`late` says how many of those there were).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Row,
    Select,
    String,
    case,
    column,
    func,
    select,
    table,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import ColumnElement

from linewatch.pipeline.errors import LinewatchError, ServiceUnavailable, one_line
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.storage import migrate
from linewatch.pipeline.storage.database import create_database_engine
from linewatch.pipeline.storage.retention import parse_age
from linewatch.schemas.tables import Detection, ShadowDetection

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?$")


@dataclass(frozen=True)
class Window:
    """UTC bounds (aware datetimes) and an optional camera."""

    since: datetime
    until: datetime
    camera: str | None = None


class _DefectRate:
    """defect_rate of a row with `frames` and `defects`."""

    frames: int
    defects: int

    @property
    def defect_rate(self) -> float:
        return self.defects / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class CameraHour(_DefectRate):
    camera_id: str
    hour: datetime
    shift_start: datetime
    shift: str
    frames: int
    defects: int


@dataclass(frozen=True)
class CameraShift(_DefectRate):
    camera_id: str
    shift_start: datetime
    shift: str  # "06-14", "14-22" or "22-06" (UTC)
    frames: int
    defects: int


@dataclass(frozen=True)
class ClassRate:
    """Frames labelled `label`; `rate` is their share of all inferred frames in the window."""

    label: str
    frames: int
    defects: int
    rate: float


@dataclass(frozen=True)
class ModelVersionStats(_DefectRate):
    model_version: str
    frames: int
    defects: int
    per_class: tuple[tuple[str, int], ...]  # (label, frames), most frequent first


@dataclass(frozen=True)
class ShadowComparison:
    """The live model against a shadow model on the same frames (raw rows in the window)."""

    model_version: str
    shadow_version: str
    frames: int
    same_label: int
    defects: int
    shadow_defects: int
    only_live_defects: int
    only_shadow_defects: int

    @property
    def agreement(self) -> float:
        return self.same_label / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class PartCounts:
    """Parts and what the line decided for them (ok + ng + uninspected = parts)."""

    parts: int = 0
    ok: int = 0
    ng: int = 0
    uninspected: int = 0  # no inferred view, or decided after the deadline
    late: int = 0  # decided after the deadline (sent as uninspected)

    @property
    def inspected(self) -> int:
        return self.parts - self.uninspected

    @property
    def first_pass_yield(self) -> float:
        """OK parts over all parts (an uninspected part is not a first-pass good one)."""
        return self.ok / self.parts if self.parts else 0.0

    @property
    def ng_rate(self) -> float:
        """NG parts over inspected parts."""
        return self.ng / self.inspected if self.inspected else 0.0

    def __add__(self, other: PartCounts) -> PartCounts:
        return PartCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.parts, self.ok, self.ng, self.uninspected, self.late)


@dataclass(frozen=True)
class PartHour:
    camera_id: str
    hour: datetime
    shift_start: datetime
    shift: str
    counts: PartCounts


@dataclass(frozen=True)
class PartShift:
    camera_id: str
    shift_start: datetime
    shift: str
    counts: PartCounts


@dataclass(frozen=True)
class ParetoRow:
    """A defect class of NG parts, most frequent first, with its cumulative share."""

    label: str
    ng: int
    share: float
    cumulative_share: float


@dataclass(frozen=True)
class PartVersion:
    model_version: str
    counts: PartCounts
    ng_per_class: tuple[tuple[str, int], ...]  # (label, NG parts), most frequent first


@dataclass(frozen=True)
class PartsReport:
    window: Window
    camera_hours: list[PartHour]
    camera_shifts: list[PartShift]
    pareto: list[ParetoRow]
    model_versions: list[PartVersion]

    @property
    def totals(self) -> PartCounts:
        return sum((row.counts for row in self.camera_hours), PartCounts())

    @property
    def line_hours(self) -> list[tuple[datetime, PartCounts]]:
        """All cameras together per hour (parts per hour of the line)."""
        per_hour: dict[datetime, PartCounts] = {}
        for row in self.camera_hours:
            per_hour[row.hour] = per_hour.get(row.hour, PartCounts()) + row.counts
        return sorted(per_hour.items())


@dataclass(frozen=True)
class Report:
    window: Window
    camera_hours: list[CameraHour]
    camera_shifts: list[CameraShift]
    class_rates: list[ClassRate]
    top_hours: list[CameraHour]
    model_versions: list[ModelVersionStats]
    shadow: list[ShadowComparison]
    parts: PartsReport | None = None

    @property
    def frames(self) -> int:
        return sum(row.frames for row in self.class_rates)

    @property
    def defects(self) -> int:
        return sum(row.defects for row in self.class_rates)


ROWS = table(
    "report_rows",
    column("camera_id", String()),
    column("at", DateTime(timezone=True)),
    column("hour", DateTime()),
    column("model_version", String()),
    column("label", String()),
    column("frames", BigInteger()),
    column("defects", BigInteger()),
)
PART_COUNTS = ("parts", "ok", "ng", "uninspected", "late")
PART_ROWS = table(
    "report_part_rows",
    column("camera_id", String()),
    column("at", DateTime(timezone=True)),
    column("hour", DateTime()),
    column("model_version", String()),
    column("label", String()),
    *(column(name, BigInteger()) for name in PART_COUNTS),
)
SHIFTS = ("06-14", "14-22", "22-06")


def shift_of(hour: datetime) -> tuple[datetime, str]:
    """(start, name) of the shift holding `hour` (the view report_camera_hour agrees)."""
    shifted = hour - timedelta(hours=6)
    index = shifted.hour // 8
    start = shifted.replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(hours=6 + 8 * index), SHIFTS[index]


def parse_time(text: str, now: datetime) -> datetime:
    """'24h' / '30d' / '90m' before `now`, or a UTC date / date-time like 2026-11-01[T06:00]."""
    text = text.strip()
    if _DATE.match(text):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date: {exc}") from exc
        return moment.replace(tzinfo=timezone.utc)
    try:
        return now - parse_age(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an age like 24h, 7d or a date like 2026-11-01") from exc


def parse_option_time(flag: str, text: str, now: datetime | None = None) -> datetime:
    """`parse_time` for a command-line option: a bad value names the option."""
    try:
        return parse_time(text, now or datetime.now(timezone.utc))
    except ValueError as exc:
        raise LinewatchError(f"{flag}: {exc}") from exc


def open_for_reports(url: str) -> Engine:
    """An engine on an existing database at this linewatch's schema (never creates one)."""
    safe = redact_url(url)
    engine = create_database_engine(url)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and not Path(database).exists():
        raise ServiceUnavailable(f"no database file at {database} ({safe})")
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except OperationalError as exc:
        raise ServiceUnavailable(f"cannot reach database {safe} ({one_line(exc.orig)})") from exc
    if current != head:
        raise migrate.SchemaOutOfDate(
            f"database {safe} has schema revision {current or 'none'}, reports need {head}; "
            "back it up, then run `linewatch db upgrade`"
        )
    return engine


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc)


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _where(
    window: Window, at: ColumnElement = ROWS.c.at, camera: ColumnElement = ROWS.c.camera_id
) -> list[ColumnElement[bool]]:
    """The window on the `at` (capture time) and `camera` columns, in whole UTC hours."""
    until = _hour_floor(window.until)
    if until < window.until:
        until += timedelta(hours=1)
    conditions = [at >= _hour_floor(window.since), at < until]
    if window.camera is not None:
        conditions.append(camera == window.camera)
    return conditions


def _totals(*keys: ColumnElement) -> Select:  # type: ignore[type-arg]
    frames, defects = func.sum(ROWS.c.frames), func.sum(ROWS.c.defects)
    return select(*keys, frames.label("frames"), defects.label("defects")).group_by(*keys)


def _fetch(engine: Engine, query: Select) -> list[Row]:  # type: ignore[type-arg]
    with engine.connect() as connection:
        return list(connection.execute(query))


def _camera_hour(camera_id: str, hour: datetime, frames: int, defects: int) -> CameraHour:
    start, shift = shift_of(_utc(hour))
    return CameraHour(camera_id, _utc(hour), start, shift, int(frames), int(defects))


def camera_hours(engine: Engine, window: Window) -> list[CameraHour]:
    """Frames and defects per camera per hour, in time order."""
    query = _totals(ROWS.c.camera_id, ROWS.c.hour).where(*_where(window))
    rows = _fetch(engine, query.order_by(ROWS.c.hour, ROWS.c.camera_id))
    return [_camera_hour(*row) for row in rows]


def camera_shifts(engine: Engine, window: Window) -> list[CameraShift]:
    """Frames and defects per camera per shift (edge shifts hold only their in-window hours)."""
    return shifts_of(camera_hours(engine, window))


def shifts_of(hours: list[CameraHour]) -> list[CameraShift]:
    totals: dict[tuple[datetime, str, str], list[int]] = {}
    for row in hours:
        counts = totals.setdefault((row.shift_start, row.camera_id, row.shift), [0, 0])
        counts[0] += row.frames
        counts[1] += row.defects
    return [CameraShift(c, start, s, f, d) for (start, c, s), (f, d) in sorted(totals.items())]


def class_rates(engine: Engine, window: Window) -> list[ClassRate]:
    """Per label: frames, defects and share of all inferred frames, most frequent first."""
    query = _totals(ROWS.c.label).where(*_where(window))
    return _rates([(label, int(f), int(d)) for label, f, d in _fetch(engine, query)])


def _rates(rows: list[tuple[str, int, int]]) -> list[ClassRate]:
    total = sum(frames for _, frames, _ in rows)
    rows = sorted(rows, key=_by_count)
    return [ClassRate(label, f, d, f / total) for label, f, d in rows]


def top_hours(engine: Engine, window: Window, limit: int = 10) -> list[CameraHour]:
    """The camera-hours with most defects (ties: earlier first)."""
    defects = func.sum(ROWS.c.defects)
    query = (
        _totals(ROWS.c.camera_id, ROWS.c.hour)
        .where(*_where(window))
        .having(defects > 0)
        .order_by(defects.desc(), ROWS.c.hour, ROWS.c.camera_id)
        .limit(limit)
    )
    return [_camera_hour(*row) for row in _fetch(engine, query)]


def model_versions(engine: Engine, window: Window) -> list[ModelVersionStats]:
    """Per model version: frames, defects and frames per label (to compare a shadow model)."""
    return _versions(_version_labels(engine, window))


def _version_labels(engine: Engine, window: Window) -> list[tuple[str, str, int, int]]:
    query = _totals(ROWS.c.model_version, ROWS.c.label).where(*_where(window))
    return [(v, label, int(f), int(d)) for v, label, f, d in _fetch(engine, query)]


def _versions(rows: list[tuple[str, str, int, int]]) -> list[ModelVersionStats]:
    stats = []
    for version in sorted({row[0] for row in rows}):
        mine = sorted(((lb, f, d) for v, lb, f, d in rows if v == version), key=_by_count)
        frames, defects = sum(r[1] for r in mine), sum(r[2] for r in mine)
        stats.append(ModelVersionStats(version, frames, defects, tuple((r[0], r[1]) for r in mine)))
    return stats


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, 1), else_=0))


def shadow_comparison(engine: Engine, window: Window) -> list[ShadowComparison]:
    """Live vs shadow results per version pair for frames captured in the window."""
    live, shadow = Detection.__table__.alias("d"), ShadowDetection.__table__.alias("s")
    conditions = [
        live.c.status == "ok",
        shadow.c.status == "ok",
        *_where(window, live.c.captured_at, live.c.camera_id),
    ]
    query = (
        select(
            live.c.model_version,
            shadow.c.model_version,
            func.count(),
            _count_where(live.c.label == shadow.c.label),
            _count_where(live.c.is_defect),
            _count_where(shadow.c.is_defect),
            _count_where(live.c.is_defect & ~shadow.c.is_defect),
            _count_where(shadow.c.is_defect & ~live.c.is_defect),
        )
        .join(shadow, (shadow.c.camera_id == live.c.camera_id) & (shadow.c.seq == live.c.seq))
        .where(*conditions)
        .group_by(live.c.model_version, shadow.c.model_version)
        .order_by(live.c.model_version, shadow.c.model_version)
    )
    return [
        ShadowComparison(row[0], row[1], *(int(value or 0) for value in row[2:]))
        for row in _fetch(engine, query)
    ]


def _by_count(row: tuple[str, int, int]) -> tuple[int, str]:
    return -row[1], row[0]


def _top(hours: list[CameraHour], limit: int) -> list[CameraHour]:
    ranked = sorted(
        (r for r in hours if r.defects), key=lambda r: (-r.defects, r.hour, r.camera_id)
    )
    return ranked[:limit]


def _part_totals(window: Window, *keys: ColumnElement) -> Select:  # type: ignore[type-arg]
    sums = (func.sum(PART_ROWS.c[name]).label(name) for name in PART_COUNTS)
    conditions = _where(window, PART_ROWS.c.at, PART_ROWS.c.camera_id)
    return select(*keys, *sums).where(*conditions).group_by(*keys)


def _counts(values: Sequence[object]) -> PartCounts:
    return PartCounts(*(int(value or 0) for value in values))  # type: ignore[call-overload]


def part_hours(engine: Engine, window: Window) -> list[PartHour]:
    """Parts per camera per hour, in time order."""
    keys = (PART_ROWS.c.camera_id, PART_ROWS.c.hour)
    rows = _fetch(engine, _part_totals(window, *keys).order_by(PART_ROWS.c.hour, keys[0]))
    return [_part_hour(camera, hour, _counts(row)) for camera, hour, *row in rows]


def _part_hour(camera_id: str, hour: datetime, counts: PartCounts) -> PartHour:
    start, shift = shift_of(_utc(hour))
    return PartHour(camera_id, _utc(hour), start, shift, counts)


def part_shifts(hours: list[PartHour]) -> list[PartShift]:
    totals: dict[tuple[datetime, str, str], PartCounts] = {}
    for row in hours:
        key = (row.shift_start, row.camera_id, row.shift)
        totals[key] = totals.get(key, PartCounts()) + row.counts
    return [PartShift(c, start, s, counts) for (start, c, s), counts in sorted(totals.items())]


def _part_version_labels(engine: Engine, window: Window) -> list[tuple[str, str, PartCounts]]:
    query = _part_totals(window, PART_ROWS.c.model_version, PART_ROWS.c.label)
    return [(version, label, _counts(row)) for version, label, *row in _fetch(engine, query)]


def pareto(rows: list[tuple[str, str, PartCounts]]) -> list[ParetoRow]:
    """NG parts per defect class, most first, with the cumulative share (the 80 % line)."""
    per_label: dict[str, int] = {}
    for _, label, counts in rows:
        per_label[label] = per_label.get(label, 0) + counts.ng
    ranked = sorted(((label, n) for label, n in per_label.items() if n), key=_most_first)
    total, running, out = sum(n for _, n in ranked), 0, []
    for label, n in ranked:
        running += n
        out.append(ParetoRow(label, n, n / total, running / total))
    return out


def _most_first(row: tuple[str, int]) -> tuple[int, str]:
    return -row[1], row[0]


def part_versions(rows: list[tuple[str, str, PartCounts]]) -> list[PartVersion]:
    versions = []
    for version in sorted({row[0] for row in rows}):
        mine = [(label, counts) for v, label, counts in rows if v == version]
        counts = sum((c for _, c in mine), PartCounts())
        ng = sorted(((lb, c.ng) for lb, c in mine if c.ng), key=_most_first)
        versions.append(PartVersion(version, counts, tuple(ng)))
    return versions


def build_parts_report(engine: Engine, window: Window) -> PartsReport:
    """Every part table from two scans of the window (camera-hours; version-labels)."""
    hours = part_hours(engine, window)
    version_labels = _part_version_labels(engine, window)
    return PartsReport(
        window=window,
        camera_hours=hours,
        camera_shifts=part_shifts(hours),
        pareto=pareto(version_labels),
        model_versions=part_versions(version_labels),
    )


def build_report(engine: Engine, window: Window, top: int = 10) -> Report:
    """Every table of a report: parts (two scans of the window), then frames (two scans)."""
    hours = camera_hours(engine, window)
    version_labels = _version_labels(engine, window)
    per_label: dict[str, list[int]] = {}
    for _, label, frames, defects in version_labels:
        counts = per_label.setdefault(label, [0, 0])
        counts[0] += frames
        counts[1] += defects
    return Report(
        window=window,
        camera_hours=hours,
        camera_shifts=shifts_of(hours),
        class_rates=_rates([(label, f, d) for label, (f, d) in per_label.items()]),
        top_hours=_top(hours, top),
        model_versions=_versions(version_labels),
        shadow=shadow_comparison(engine, window),
        parts=build_parts_report(engine, window),
    )
