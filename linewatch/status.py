"""`linewatch status`: one screen with cameras, workers, streams and recent alerts."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from rich.console import Group
from rich.table import Table
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from linewatch.pipeline import keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.decide.ng_rule import ng_sql
from linewatch.pipeline.storage import part_activity
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.streams import broker, sentinel
from linewatch.pipeline.video import camera_state
from linewatch.schemas.tables import Alert


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value else "-"


def cameras_table(client: broker.Client, settings: Settings) -> Table:
    table = Table(title="cameras")
    for column in ("camera", "state", "since", "decoded", "sent", "dropped", "last change"):
        table.add_column(column)
    now_ns = time.time_ns()
    for camera in settings.cameras:
        counters = client.hgetall(settings.camera_key(camera.id, keys.INGEST))
        last = camera_state.history(client, settings.camera_key(camera.id, keys.STATES), 1)
        since = f"{(now_ns - int(last[0]['ts'])) / 1e9:.0f} s ago" if last else "-"
        table.add_row(
            camera.id,
            _text(counters.get(b"state")) if counters else "not seen",
            since,
            *(_text(counters.get(k)) for k in (b"decoded", b"sent", b"dropped")),
            last[0]["reason"] if last else "-",
        )
    return table


def workers_table(client: broker.Client, settings: Settings) -> Table:
    table = Table(title="workers (heartbeats, 15 s TTL)")
    for column in ("worker", "role", "pid", "last seen", "progress"):
        table.add_column(column)
    now = time.time()
    for key in broker.live_keys(client, settings.worker_key("*")):
        fields = client.hgetall(key)
        seen = now - int(fields.get(b"seen", b"0"))
        progress = _text(fields.get(b"inferred") or fields.get(b"written"))
        table.add_row(
            key.rsplit(":", 1)[1],
            _text(fields.get(b"role")),
            _text(fields.get(b"pid")),
            f"{seen:.0f} s ago",
            progress,
        )
    return table


def streams_table(client: broker.Client, settings: Settings) -> Table:
    table = Table(title="streams and counters")
    table.add_column("name")
    table.add_column("value", justify="right")
    for name, stream in (
        ("frames backlog", settings.frames_stream),
        ("results backlog", settings.results_stream),
        ("dead letters", settings.dead_letter_stream),
    ):
        table.add_row(name, str(broker.backlog(client, stream)))
    for name, value in sorted(client.hgetall(settings.stats_key).items()):
        table.add_row(name.decode(), value.decode())
    return table


def redis_table(client: broker.Client, settings: Settings) -> Table:
    """Which Redis is the primary (Sentinel: as the sentinels say now) and the last
    failover a linewatch process noticed."""
    table = Table(title="redis")
    table.add_column("name")
    table.add_column("value")
    table.add_row("broker", broker.describe(settings))
    if settings.redis is None:
        return table
    address = sentinel.primary(settings.redis)
    table.add_row("primary", f"{address[0]}:{address[1]}" if address else "none (failing over?)")
    table.add_row("last failover", describe_failover(sentinel.last_failover(client)))
    return table


def describe_failover(failover: dict[str, str]) -> str:
    """`{at, from, to}` as one line; `none seen` when empty."""
    if not failover.get("at"):
        return "none seen"
    at = datetime.fromtimestamp(float(failover["at"]), timezone.utc)
    ago = time.time() - float(failover["at"])
    when = f"{at:%Y-%m-%d %H:%M:%S} UTC ({ago:.0f} s ago)"
    return f"{when}: {failover.get('from', '?')} -> {failover.get('to', '?')}"


def parts_table(engine: Engine, settings: Settings) -> Table:
    """Per camera: parts per minute and NG rate over the last minute, the last NG part."""
    window = f"{part_activity.WINDOW_S:.0f} s"
    table = Table(title=f"parts (parts/min and NG rate over the last {window})")
    for column in ("camera", "parts/min", "NG rate", "last NG part", "class", "seen"):
        table.add_column(column)
    ng = ng_sql(settings.verdict.rejects_uninspected)
    cameras = [camera.id for camera in settings.cameras]
    recent = part_activity.recent(engine, ng)
    last = part_activity.last_ng(engine, cameras, ng)
    now = datetime.now(timezone.utc)
    for camera in cameras:
        activity = recent.get(camera, part_activity.Activity(0, 0))
        rate = activity.ng_rate
        ng = last.get(camera)
        table.add_row(
            camera,
            f"{activity.parts * 60 / part_activity.WINDOW_S:.1f}",
            "-" if rate is None else f"{rate:.1%}",
            str(ng.part_id) if ng else "-",
            ng.label if ng else "-",
            f"{(now - ng.captured_at).total_seconds():.0f} s ago" if ng else "-",
        )
    return table


def alerts_table(engine: Engine, limit: int = 10) -> Table:
    table = Table(title=f"recent alerts (last {limit})")
    for column in ("id", "camera", "kind", "defect", "state", "part", "peak"):
        table.add_column(column)
    with Session(engine) as session:
        rows = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(limit)).all()
        for a in rows:
            table.add_row(
                str(a.id),
                a.camera_id,
                a.kind,
                a.label,
                a.state,
                "-" if a.part_id is None else str(a.part_id),
                f"{a.peak_score:.2f}",
            )
    return table


def status_screen(client: broker.Client, settings: Settings) -> Group:
    engine = open_database(settings.resolved_database_url())
    try:
        return Group(
            cameras_table(client, settings),
            parts_table(engine, settings),
            workers_table(client, settings),
            streams_table(client, settings),
            redis_table(client, settings),
            alerts_table(engine),
        )
    finally:
        engine.dispose()
