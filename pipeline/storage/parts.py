"""SQL for parts: pending part ends, a part's stored views, part rows and part alerts.

Restart state lives here, not in the sink's memory: a part end is stored in `part_ends`
in the same transaction as the batch it came in (and acknowledged on the stream only
after that commit); it is deleted in the transaction that makes its part's row final.
A replayed part end whose part already has a row is not stored again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timezone

from sqlalchemy import Engine, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, undefer

from linewatch.pipeline.storage.upsert import insert_for
from linewatch.schemas.decisions import LINE_LABEL, LineEvent, PartOutcome, PendingPart, ViewResult
from linewatch.schemas.messages import PartEndMessage
from linewatch.schemas.tables import Alert, Detection, Part, PartEnd


def store_part_ends(
    session: Session, ends: Sequence[PartEndMessage], deadline_ns: int, now: int
) -> int:
    """Store the part ends not stored or decided yet; returns how many were new. A part
    end's verdict is due at its `deadline_ts` (ingest's: live or file), else (a part end
    without one) `deadline_ns` after it ended."""
    if not ends:
        return 0
    unique = {(end.camera_id, end.part_id): end for end in ends}
    keys = list(unique)
    known = set(_existing(session, PartEnd, keys)) | set(_existing(session, Part, keys))
    rows = [_end_row(end, deadline_ns, now) for key, end in unique.items() if key not in known]
    if rows:
        session.execute(PartEnd.__table__.insert(), rows)
    return len(rows)


def _existing(
    session: Session, table: type[Part] | type[PartEnd], keys: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    match = or_(*(and_(table.camera_id == c, table.part_id == p) for c, p in keys))
    rows = session.execute(select(table.camera_id, table.part_id).where(match)).all()
    return [(camera, int(part)) for camera, part in rows]


def _end_row(end: PartEndMessage, deadline_ns: int, now: int) -> dict[str, object]:
    return {
        **asdict(end),  # the part_ends columns are the message's fields, and these:
        "deadline_ts": end.deadline_ts or end.ended_ts + deadline_ns,
        "received_ts": now,
        "announced": False,
    }


def pending_parts(engine: Engine) -> list[PendingPart]:
    """Every stored part end with the number of its views stored, oldest part first."""
    views = func.count(func.distinct(Detection.view_index))
    query = (
        select(PartEnd, views)
        .outerjoin(
            Detection,
            and_(Detection.camera_id == PartEnd.camera_id, Detection.part_id == PartEnd.part_id),
        )
        .group_by(PartEnd.id)
        .order_by(PartEnd.camera_id, PartEnd.part_id)
    )
    with Session(engine) as session:
        return [_pending(row, int(count)) for row, count in session.execute(query).all()]


def _pending(row: PartEnd, views_stored: int) -> PendingPart:
    end = PartEndMessage(**{name.name: getattr(row, name.name) for name in fields(PartEndMessage)})
    return PendingPart(end, row.deadline_ts, row.announced, views_stored)


def part_views(session: Session, camera_id: str, part_id: int) -> list[ViewResult]:
    """A part's stored views (every status), in view order, with their evidence crops."""
    rows = session.scalars(
        select(Detection)
        .options(undefer(Detection.evidence))
        .where(Detection.camera_id == camera_id, Detection.part_id == part_id)
        .order_by(Detection.view_index, Detection.id)
    ).all()
    views: dict[int, ViewResult] = {}
    for row in rows:  # one view per index (another model version of it is not a new view)
        views.setdefault(int(row.view_index or 0), _view(row))
    return list(views.values())


def _view(row: Detection) -> ViewResult:
    return ViewResult(
        view_index=int(row.view_index or 0),
        seq=row.seq,
        pts=row.pts,
        status=row.status,
        model_version=row.model_version,
        topk=parse_topk(row.topk),
        box=_box_of(row),
        evidence=row.evidence,
        novelty=row.novelty,
        gallery_label=row.gallery_label,
    )


def parse_topk(text: str) -> tuple[tuple[str, float], ...]:
    """The detections row's `topk` text (`label:score,label:score`)."""
    pairs = []
    for item in filter(None, text.split(",")):
        label, _, score = item.rpartition(":")
        pairs.append((label, float(score)))
    return tuple(pairs)


def _box_of(row: Detection) -> tuple[int, int, int, int] | None:
    if not row.view_box:
        return None
    x1, y1, x2, y2 = (int(value) for value in json.loads(row.view_box))
    return (x1, y1, x2, y2)


def claim(session: Session, pending: PendingPart, final: bool) -> bool:
    """Take the part end for this decision (False: another sink took it first). Final
    deletes it; otherwise it is marked announced (sent as uninspected at the deadline)."""
    match = (
        PartEnd.camera_id == pending.end.camera_id,
        PartEnd.part_id == pending.end.part_id,
        PartEnd.announced.is_(pending.announced),
    )
    if final:
        result = session.execute(delete(PartEnd).where(*match))
    else:
        result = session.execute(update(PartEnd).where(*match).values(announced=True))
    return result.rowcount == 1  # type: ignore[attr-defined]


def insert_part(session: Session, engine: Engine, row: dict[str, object]) -> int | None:
    """The new part row's id; None when the part already has one (a replay)."""
    statement = insert_for(engine, Part).on_conflict_do_nothing(
        index_elements=["camera_id", "part_id", "model_version"]
    )
    return session.execute(statement.values(row).returning(Part.id)).scalar()


def update_late(session: Session, camera_id: str, part_id: int, row: dict[str, object]) -> None:
    """A verdict reached after the deadline replaces the uninspected one, marked late."""
    keep = ("camera_id", "part_id", "deadline_ts")
    values = {key: value for key, value in row.items() if key not in keep}
    values["late"] = True
    session.execute(
        update(Part)
        .where(Part.camera_id == camera_id, Part.part_id == part_id, Part.late.is_(False))
        .values(values)
    )


def drop_evidence(session: Session, camera_id: str, part_id: int) -> None:
    """The part row holds the one crop it needs; its views' copies go."""
    session.execute(
        update(Detection)
        .where(
            Detection.camera_id == camera_id,
            Detection.part_id == part_id,
            Detection.evidence.is_not(None),
        )
        .values(evidence=None)
    )


def insert_part_alert(session: Session, engine: Engine, values: dict[str, object]) -> int | None:
    """One alert per NG part (unique per camera and part); None on a replay."""
    statement = insert_for(engine, Alert).on_conflict_do_nothing(
        index_elements=["camera_id", "part_id"], index_where=Alert.part_id.is_not(None)
    )
    return session.execute(statement.values(values).returning(Alert.id)).scalar()


def store_line_event(session: Session, engine: Engine, event: LineEvent, now: int) -> int:
    """Insert an opened line alarm or close the stored one; returns its alert id."""
    key = (
        Alert.camera_id == event.camera_id,
        Alert.kind == "line",
        Alert.label == LINE_LABEL,
        Alert.opened_seq == event.opened_seq,
        Alert.part_id.is_(None),
    )
    values = _line_values(event)
    if event.state == "open":
        statement = insert_for(engine, Alert).on_conflict_do_nothing(
            index_elements=["camera_id", "label", "opened_seq"],
            index_where=Alert.part_id.is_(None),
        )
        new_id = session.execute(
            statement.values({**values, "raised_ts": now}).returning(Alert.id)
        ).scalar()
        if new_id is not None:
            return int(new_id)
    else:
        session.execute(update(Alert).where(*key).values(values))
    return int(session.execute(select(Alert.id).where(*key)).scalar_one())


def _line_values(event: LineEvent) -> dict[str, object]:
    return {
        "camera_id": event.camera_id,
        "kind": "line",
        "label": LINE_LABEL,
        "state": event.state,
        "opened_seq": event.opened_seq,
        "opened_ts": event.opened_ts,
        "closed_seq": event.closed_seq,
        "closed_ts": event.closed_ts,
        "peak_score": event.rate,
        "frames": event.ng_parts,
    }


def open_line_events(engine: Engine) -> list[LineEvent]:
    with Session(engine) as session:
        rows = session.scalars(
            select(Alert).where(Alert.kind == "line", Alert.state == "open")
        ).all()
    return [
        LineEvent(r.camera_id, "open", r.opened_seq, r.opened_ts, r.peak_score, int(r.frames))
        for r in rows
    ]


def recent_outcomes(
    engine: Engine, n: int, is_ng: Callable[[str, bool], bool]
) -> list[PartOutcome]:
    """Each camera's last `n` decided parts, oldest first, as the line alarm saw them:
    `is_ng(verdict, late)` is the NG rule (pipeline/decide/ng_rule.py)."""
    with Session(engine) as session:
        cameras = session.scalars(select(Part.camera_id).distinct()).all()
        out: list[PartOutcome] = []
        for camera in cameras:
            rows = session.scalars(
                select(Part)
                .where(Part.camera_id == camera)
                .order_by(Part.decided_ts.desc(), Part.part_id.desc())
                .limit(n)
            ).all()
            out += [_outcome(row, is_ng(row.verdict, row.late)) for row in reversed(rows)]
    return out


def _outcome(row: Part, ng: bool) -> PartOutcome:
    return PartOutcome(
        row.camera_id, row.part_id, row.first_seq, row.last_seq, row.last_capture_ts, ng
    )


def captured_at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts / 1e9, tz=timezone.utc)


def class_scores_json(scores: dict[str, float]) -> str:
    return json.dumps(scores, sort_keys=True)


def camera_parts(
    engine: Engine, camera_id: str, model_version: str | None = None
) -> list[tuple[int, float, float, str, str, bool]]:
    """(part_id, first_pts, last_pts, verdict, label, late) of a camera's part rows, of
    `model_version` (default: the version with the most rows), in part order."""
    with Session(engine) as session:
        if model_version is None:
            model_version = session.scalar(
                select(Part.model_version)
                .where(Part.camera_id == camera_id)
                .group_by(Part.model_version)
                .order_by(func.count().desc())
                .limit(1)
            )
        rows = session.execute(
            select(Part.part_id, Part.first_pts, Part.last_pts, Part.verdict, Part.label, Part.late)
            .where(Part.camera_id == camera_id, Part.model_version == model_version)
            .order_by(Part.part_id)
        ).all()
    return [(int(p), float(a), float(b), v, lb, bool(late)) for p, a, b, v, lb, late in rows]
