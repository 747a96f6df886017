"""Read parts, alerts and reviews for the HTTP API, and write people's reviews.

Every query is built with SQLAlchemy expressions (bound parameters, never string
formatting), so a filter value such as `' OR 1=1 --` is just a value that matches
nothing. Lists page by keyset on the row id, newest first: the cursor is the last id
of the previous page, so a page is stable while new rows arrive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, Select, and_, case, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from linewatch.pipeline.storage.parts import parse_topk
from linewatch.schemas.tables import Alert, Detection, Part, PartReview, ShadowDetection

VERDICTS = ("ok", "defect", "uninspected")
REVIEW_VERDICTS = ("ok", "defect")
REJECTED = ("defect", "uninspected")  # an uninspected part is rejected by default


@dataclass(frozen=True)
class PartFilter:
    camera: str | None = None
    verdict: str | None = None
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: int | None


PART_COLUMNS = (
    Part.id,
    Part.camera_id,
    Part.part_id,
    Part.verdict,
    Part.label,
    Part.score,
    Part.class_scores,
    Part.model_version,
    Part.captured_at,
    Part.views_sent,
    Part.views_inferred,
    Part.late,
    Part.end_reason,
    Part.x1,
    Part.y1,
    Part.x2,
    Part.y2,
    Part.novelty,
    Part.gallery_label,
    Part.evidence.is_not(None).label("has_evidence"),
)


def _utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive UTC datetimes
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def part_dict(row: Any) -> dict[str, Any]:
    """A part row as the API shows it (evidence as a URL, not bytes)."""
    box = (row.x1, row.y1, row.x2, row.y2)
    return {
        "id": row.id,
        "camera_id": row.camera_id,
        "part_id": row.part_id,
        "verdict": row.verdict,
        "label": row.label,
        "score": row.score,
        "class_scores": json.loads(row.class_scores or "{}"),
        "model_version": row.model_version,
        "captured_at": _utc(row.captured_at),
        "views_sent": row.views_sent,
        "views_inferred": row.views_inferred,
        "late": bool(row.late),
        "end_reason": row.end_reason,
        "box": list(box) if None not in box else None,
        "novelty": row.novelty,  # null: the model has no gallery
        "gallery_label": row.gallery_label,
        "evidence_url": f"/v1/parts/{row.id}/evidence.jpg" if row.has_evidence else None,
    }


def _part_conditions(where: PartFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.camera is not None:
        conditions.append(Part.camera_id == where.camera)
    if where.verdict is not None:
        conditions.append(Part.verdict == where.verdict)
    if where.label is not None:
        conditions.append(Part.label == where.label)
    if where.since is not None:
        conditions.append(Part.captured_at >= where.since)
    if where.until is not None:
        conditions.append(Part.captured_at < where.until)
    return conditions


def _page(engine: Engine, query: Select, id_column: Any, limit: int, cursor: int | None) -> Page:  # type: ignore[type-arg]
    if cursor is not None:
        query = query.where(id_column < cursor)
    query = query.order_by(id_column.desc()).limit(limit + 1)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([dict(row._mapping) for row in rows], rows[-1].id if more and rows else None)


def list_parts(engine: Engine, where: PartFilter, limit: int, cursor: int | None) -> Page:
    query = select(*PART_COLUMNS).where(*_part_conditions(where))
    page = _page(engine, query, Part.id, limit, cursor)
    return Page([part_dict(_Row(item)) for item in page.items], page.next_cursor)


class _Row:
    """Attribute access over a row mapping (what part_dict reads)."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self.__dict__.update(mapping)


def get_part(engine: Engine, row_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(select(*PART_COLUMNS).where(Part.id == row_id)).first()
    return part_dict(row) if row else None


def part_evidence(engine: Engine, row_id: int) -> bytes | None:
    with engine.connect() as connection:
        return connection.execute(select(Part.evidence).where(Part.id == row_id)).scalar()


def get_part_by_key(
    engine: Engine, camera_id: str, part_id: int, model_version: str
) -> dict[str, Any] | None:
    """A part named as a verdict names it (camera, part id, model version)."""
    query = select(*PART_COLUMNS).where(
        Part.camera_id == camera_id, Part.part_id == part_id, Part.model_version == model_version
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return part_dict(row) if row else None


ALERT_COLUMNS = (
    Alert.id,
    Alert.camera_id,
    Alert.label,
    Alert.state,
    Alert.opened_seq,
    Alert.opened_ts,
    Alert.raised_ts,
    Alert.closed_seq,
    Alert.closed_ts,
    Alert.peak_score,
    Alert.frames,
)


def list_alerts(
    engine: Engine,
    camera: str | None,
    since: datetime | None,
    limit: int,
    cursor: int | None,
) -> Page:
    conditions: list[ColumnElement[bool]] = []
    if camera is not None:
        conditions.append(Alert.camera_id == camera)
    if since is not None:
        conditions.append(Alert.raised_ts >= int(since.timestamp() * 1e9))
    return _page(engine, select(*ALERT_COLUMNS).where(*conditions), Alert.id, limit, cursor)


@dataclass(frozen=True)
class CameraParts:
    camera_id: str
    parts: int
    rejected: int
    last_part_at: str | None
    model_version: str | None

    @property
    def ng_rate(self) -> float:
        return self.rejected / self.parts if self.parts else 0.0


def camera_parts(
    engine: Engine, since: datetime, cameras: Sequence[str], is_ng: ColumnElement[bool]
) -> dict[str, CameraParts]:
    """Per camera (the given ones and any with parts since `since`): parts and NG parts
    since `since` as the line saw them (`is_ng`: decide/ng_rule.py's `ng_sql`), its last
    part's time and model."""
    rejected = func.sum(case((is_ng, 1), else_=0))
    counts = (
        select(Part.camera_id, func.count(), func.coalesce(rejected, 0))
        .where(Part.captured_at >= since)
        .group_by(Part.camera_id)
    )
    with Session(engine) as session:
        window = {c: (n, int(r)) for c, n, r in session.execute(counts)}
        last = {c: _latest(session, c) for c in dict.fromkeys([*cameras, *window])}
    return {
        camera: CameraParts(camera, *window.get(camera, (0, 0)), _utc(at), version)
        for camera, (at, version) in last.items()
        if at is not None
    }


def _latest(session: Session, camera: str) -> tuple[Any, str | None]:
    """The camera's last part's capture time and model version (the camera + time index)."""
    row = session.execute(
        select(Part.captured_at, Part.model_version)
        .where(Part.camera_id == camera)
        .order_by(Part.captured_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else (None, None)


def _hour_of(engine: Engine) -> ColumnElement[Any]:
    """Part.captured_at truncated to its UTC hour, in the database's own dialect."""
    if engine.dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", Part.captured_at))
    return func.strftime("%Y-%m-%d %H:00:00", Part.captured_at)  # stored as naive UTC text


def ng_rate_per_hour(
    engine: Engine, since: datetime, is_ng: ColumnElement[bool], camera: str | None = None
) -> list[dict[str, Any]]:
    """Parts and NG parts (`is_ng`: as the line saw them) per UTC hour since `since`."""
    hour = _hour_of(engine).label("hour")
    rejected = func.sum(case((is_ng, 1), else_=0))
    query = select(hour, func.count(), rejected).where(Part.captured_at >= since)
    if camera is not None:
        query = query.where(Part.camera_id == camera)
    query = query.group_by(hour).order_by(hour)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        {"hour": _hour_text(at), "parts": n, "rejected": int(r), "ng_rate": int(r) / n}
        for at, n, r in rows
    ]


def _hour_text(value: datetime | str) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=timezone.utc).isoformat()


def add_review(
    engine: Engine,
    row_id: int,
    reviewer: str,
    verdict: str,
    label: str,
    note: str | None = None,
) -> dict[str, Any] | None:
    """Store one review of part row `row_id`; None when there is no such part."""
    with Session(engine) as session, session.begin():
        part = session.get(Part, row_id)
        if part is None:
            return None
        review = PartReview(
            part_row_id=row_id,
            reviewer=reviewer,
            reviewed_at=datetime.now(timezone.utc),
            verdict=verdict,
            label=label,
            machine_verdict=part.verdict,
            machine_label=part.label,
            note=note,
        )
        session.add(review)
        session.flush()
        return review_dict(review)


def review_dict(review: PartReview) -> dict[str, Any]:
    return {
        "id": review.id,
        "part": review.part_row_id,
        "reviewer": review.reviewer,
        "reviewed_at": _utc(review.reviewed_at),
        "verdict": review.verdict,
        "label": review.label,
        "machine_verdict": review.machine_verdict,
        "machine_label": review.machine_label,
        "note": review.note,
    }


def reviews_of(engine: Engine, row_id: int) -> list[dict[str, Any]]:
    """Every review of a part, oldest first (the last one counts)."""
    query = select(PartReview).where(PartReview.part_row_id == row_id).order_by(PartReview.id)
    with Session(engine) as session:
        return [review_dict(review) for review in session.scalars(query)]


def _shadow_disagrees() -> ColumnElement[bool]:
    """A view of the part on which the shadow model's defect decision differs."""
    return exists(
        select(1)
        .select_from(Detection)
        .join(
            ShadowDetection,
            and_(
                ShadowDetection.camera_id == Detection.camera_id,
                ShadowDetection.seq == Detection.seq,
            ),
        )
        .where(
            Detection.camera_id == Part.camera_id,
            Detection.part_id == Part.part_id,
            Detection.model_version == Part.model_version,
            ShadowDetection.is_defect != Detection.is_defect,
        )
    )


def review_queue(
    engine: Engine, threshold: float, band: float, limit: int, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Parts nobody reviewed yet: shadow disagreements first, then parts whose score lies
    within `band` of `threshold` (closest first), then uninspected parts, then the rest
    newest first."""
    reviewed = exists(select(1).where(PartReview.part_row_id == Part.id))
    distance = func.abs(Part.score - threshold)
    disagrees = _shadow_disagrees()
    uncertain = distance <= band
    query = select(
        *PART_COLUMNS, disagrees.label("shadow_disagrees"), uncertain.label("uncertain")
    ).where(~reviewed)
    if since is not None:
        query = query.where(Part.captured_at >= since)
    query = query.order_by(
        disagrees.desc(),
        uncertain.desc(),
        (Part.verdict == "uninspected").desc(),
        distance,
        Part.id.desc(),
    ).limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [_queued(row) for row in rows]


def _queued(row: Any) -> dict[str, Any]:
    reasons = [
        name
        for name, flag in (
            ("shadow disagrees", row.shadow_disagrees),
            ("near threshold", row.uncertain),
        )
        if flag
    ]
    return {**part_dict(row), "queued_for": reasons}


def _latest_reviews(since: datetime | None) -> Select:  # type: ignore[type-arg]
    latest = select(func.max(PartReview.id)).group_by(PartReview.part_row_id)
    query = select(
        PartReview.machine_verdict, PartReview.machine_label, PartReview.verdict, PartReview.label
    ).where(PartReview.id.in_(latest))
    if since is not None:
        query = query.join(Part, Part.id == PartReview.part_row_id).where(Part.captured_at >= since)
    return query


def review_rates(engine: Engine, since: datetime | None = None) -> dict[str, Any]:
    """Overkill (rejected by the line, good by a person) and escape (passed by the line,
    defective by a person) from each reviewed part's latest review, overall and per class:
    overkill per class the line rejected as, escape per class the person named."""
    with engine.connect() as connection:
        rows = connection.execute(_latest_reviews(since)).all()
    return rates_of([tuple(row) for row in rows])


def rates_of(rows: Sequence[tuple[str, str, str, str]]) -> dict[str, Any]:
    """rows: (machine verdict, machine label, reviewed verdict, reviewed label)."""
    rejected = [r for r in rows if r[0] in REJECTED]
    passed = [r for r in rows if r[0] not in REJECTED]
    overkill = [r for r in rejected if r[2] == "ok"]
    escapes = [r for r in passed if r[2] == "defect"]
    classes = sorted({r[1] for r in rejected} | {r[3] for r in escapes})
    per_class = []
    for label in classes:
        rejected_as = [r for r in rejected if r[1] == label]
        overkilled = sum(1 for r in overkill if r[1] == label)
        escaped = sum(1 for r in escapes if r[3] == label)
        per_class.append(
            {
                "label": label,
                "rejected_reviewed": len(rejected_as),
                "overkill": overkilled,
                "overkill_rate": _ratio(overkilled, len(rejected_as)),
                "escapes": escaped,
                "escape_rate": _ratio(escaped, len(passed)),
            }
        )
    return {
        "reviewed": len(rows),
        "rejected_reviewed": len(rejected),
        "passed_reviewed": len(passed),
        "overkill": len(overkill),
        "overkill_rate": _ratio(len(overkill), len(rejected)),
        "escapes": len(escapes),
        "escape_rate": _ratio(len(escapes), len(passed)),
        "agreement": _ratio(len(rows) - len(overkill) - len(escapes), len(rows)),
        "per_class": per_class,
    }


def _ratio(count: int, total: int) -> float | None:
    return count / total if total else None


def part_verdicts(engine: Engine, camera_id: str, part_ids: Sequence[int]) -> dict[int, str]:
    """The verdict of each of a camera's parts that has one (the newest row of a part
    judged by several model versions)."""
    if not part_ids:
        return {}
    query = (
        select(Part.part_id, Part.verdict)
        .where(Part.camera_id == camera_id, Part.part_id.in_(list(part_ids)))
        .order_by(Part.id)
    )
    with engine.connect() as connection:
        return {part_id: verdict for part_id, verdict in connection.execute(query)}


VIEW_COLUMNS = (
    Detection.seq,
    Detection.pts,
    Detection.status,
    Detection.model_version,
    Detection.label,
    Detection.score,
    Detection.topk,
    Detection.is_defect,
    Detection.captured_at,
    Detection.view_box,
)


def part_view_page(
    engine: Engine, camera_id: str, part_id: int, limit: int, after: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """A part's stored views in view order, one per view index (the first stored, as the
    verdict rule reads them), after view index `after`; and the next page's cursor (the
    page's last view index) when more follow."""
    index = func.coalesce(Detection.view_index, 0)
    of_part = (Detection.camera_id == camera_id, Detection.part_id == part_id)
    first = select(func.min(Detection.id)).where(*of_part).group_by(index)
    query = select(index.label("view_index"), *VIEW_COLUMNS).where(Detection.id.in_(first))
    if after is not None:
        query = query.where(index > after)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(index).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [_view_dict(row) for row in rows], rows[-1].view_index if more and rows else None


def _view_dict(row: Any) -> dict[str, Any]:
    return {
        "view_index": int(row.view_index),
        "seq": row.seq,
        "pts": row.pts,
        "status": row.status,
        "model_version": row.model_version,
        "label": row.label,
        "score": row.score,
        "topk": [list(pair) for pair in parse_topk(row.topk)],
        "is_defect": bool(row.is_defect),
        "captured_at": _utc(row.captured_at),
        "box": json.loads(row.view_box) if row.view_box else None,
    }
