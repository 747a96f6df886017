"""SQL storage (SQLite or PostgreSQL, one code path): the engine and the sink's batch
write (view results and part ends); parts, alerts and line alarms are written by the
judge through storage/parts.py.

Boxes of a detection model go to `detection_boxes`, one row per box keyed by
(detection_id, box_index) and deleted with their detection. They are written in the
same transaction as their frame's `detections` row and only for a row that this
transaction inserted, so a replayed result (same camera_id, seq, model_version) adds
neither the frame nor any box again: exactly once in effect, as for frames."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Engine,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from linewatch.pipeline.errors import ConfigError, ServiceUnavailable, one_line
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.storage import migrate, parts
from linewatch.pipeline.storage.upsert import insert_for
from linewatch.schemas.messages import Box, PartEndMessage, ResultMessage
from linewatch.schemas.tables import Alert, Detection, DetectionBox, ShadowDetection

DatabaseError = SQLAlchemyError


def create_database_engine(url: str) -> Engine:
    """An engine for `url` (nothing checked yet); a malformed URL is a ConfigError."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(
            f"bad database URL {redact_url(url)}: {exc}; expected e.g. "
            "sqlite:///path/linewatch.db or postgresql+psycopg://user@host/db"
        ) from exc
    if engine.dialect.name == "sqlite":
        _prepare_sqlite(engine)
    return engine


def open_database(url: str) -> Engine:
    """An engine for `url` with the schema in place; errors name the redacted URL."""
    engine = create_database_engine(url)
    try:
        migrate.ensure_schema(engine, redact_url(url))
    except OperationalError as exc:
        raise unreachable(url, exc) from exc
    return engine


def unreachable(url: str, exc: OperationalError) -> ServiceUnavailable:
    """The error for a database that did not answer, naming its redacted URL."""
    return ServiceUnavailable(
        f"cannot reach database {redact_url(url)} ({one_line(exc.orig)}); "
        "start it or fix database_url / LINEWATCH_DATABASE_URL"
    )


def _prepare_sqlite(engine: Engine) -> None:
    database = engine.url.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _pragmas(connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")  # pruning a detection deletes its boxes
        cursor.close()


def detection_row(result: ResultMessage, sink_ts: int) -> dict[str, object]:
    return {
        "camera_id": result.camera_id,
        "seq": result.seq,
        "pts": result.pts,
        "status": result.status,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "label": result.label,
        "score": result.score,
        "topk": ",".join(f"{label}:{score:.4f}" for label, score in result.topk),
        "is_defect": result.is_defect,
        "captured_at": datetime.fromtimestamp(result.capture_ts / 1e9, tz=timezone.utc),
        "capture_ts": result.capture_ts,
        "ingest_ts": result.ingest_ts,
        "dequeue_ts": result.dequeue_ts,
        "infer_start_ts": result.infer_start_ts,
        "infer_end_ts": result.infer_end_ts,
        "sink_ts": sink_ts,
        "worker_id": result.worker_id,
        "novelty": result.novelty,
        "gallery_label": result.gallery_label,
        **_view_columns(result),
    }


def _view_columns(result: ResultMessage) -> dict[str, object]:
    """A part view's id, index, box and crop (defect views); None for a whole frame."""
    view = result.view
    if view is None:
        return dict.fromkeys(("part_id", "view_index", "view_box", "evidence"))
    return {
        "part_id": view.part_id,
        "view_index": view.view_index,
        "view_box": json.dumps([view.x1, view.y1, view.x2, view.y2]),
        "evidence": result.evidence or None,
    }


def write_batch(
    engine: Engine,
    results: Sequence[ResultMessage],
    sink_ts: int,
    part_ends: Sequence[PartEndMessage] = (),
    deadline_ns: int = 0,
) -> int:
    """Insert results and part ends in one transaction; replays insert nothing twice.
    Shadow-model results go to `shadow_detections`; a part end's verdict is due
    `deadline_ns` after it left view. Returns the number of new (live model) detection
    rows."""
    live = [r for r in results if not r.shadow]
    shadow = [r for r in results if r.shadow]
    with Session(engine) as session, session.begin():
        inserted = _insert_detections(session, engine, live, sink_ts) if live else 0
        if shadow:
            _insert_shadow(session, engine, shadow, sink_ts)
        parts.store_part_ends(session, part_ends, deadline_ns, sink_ts)
    return inserted


def _insert_detections(
    session: Session, engine: Engine, results: Sequence[ResultMessage], sink_ts: int
) -> int:
    """Insert the frames not stored yet, then the boxes of exactly those frames."""
    statement = insert_for(engine, Detection).on_conflict_do_nothing(
        index_elements=["camera_id", "seq", "model_version"]
    )
    returning = statement.returning(
        Detection.id, Detection.camera_id, Detection.seq, Detection.model_version
    )
    rows = [detection_row(r, sink_ts) for r in results]
    new_ids = {(c, s, v): i for i, c, s, v in session.execute(returning, rows).all()}
    inserted = len(new_ids)
    boxes: list[dict[str, object]] = []
    for result in results:
        # pop: a frame delivered twice in one batch gets its boxes once
        detection_id = new_ids.pop((result.camera_id, result.seq, result.model_version), None)
        if detection_id is not None:
            boxes += [box_row(detection_id, i, box) for i, box in enumerate(result.boxes)]
    if boxes:
        session.execute(insert_for(engine, DetectionBox), boxes)
    return inserted


def _insert_shadow(
    session: Session, engine: Engine, results: Sequence[ResultMessage], sink_ts: int
) -> None:
    statement = insert_for(engine, ShadowDetection).on_conflict_do_nothing(
        index_elements=["camera_id", "seq", "model_version"]
    )
    columns = {c.name for c in ShadowDetection.__table__.columns} - {"id"}
    rows = [detection_row(r, sink_ts) for r in results]
    session.execute(statement, [{k: v for k, v in row.items() if k in columns} for row in rows])


def box_row(detection_id: int, index: int, box: Box) -> dict[str, object]:
    return {
        "detection_id": detection_id,
        "box_index": index,
        "label": box.label,
        "score": box.score,
        "x1": box.x1,
        "y1": box.y1,
        "x2": box.x2,
        "y2": box.y2,
    }


def camera_frames(engine: Engine, camera_id: str) -> list[tuple[int, float, str, bool]]:
    """(seq, pts, label, is_defect) of a camera's inferred frames, in seq order."""
    with Session(engine) as session:
        rows = session.execute(
            select(Detection.seq, Detection.pts, Detection.label, Detection.is_defect)
            .where(Detection.camera_id == camera_id, Detection.status == "ok")
            .order_by(Detection.seq)
        ).all()
    return [(int(seq), float(pts), label, bool(flag)) for seq, pts, label, flag in rows]


def alert_open_seqs(engine: Engine, camera_id: str) -> list[int]:
    """Where the camera's line alarms opened (and its frame events, in rows stored before
    frame mode became one-view parts)."""
    with Session(engine) as session:
        rows = session.scalars(
            select(Alert.opened_seq)
            .where(Alert.camera_id == camera_id, Alert.kind.in_(("line", "frame")))
            .order_by(Alert.opened_seq)
        ).all()
    return [int(seq) for seq in rows]
