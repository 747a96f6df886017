"""/v1 routes for the line: cameras, alerts, report, hourly NG rate, live events."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.sql import ColumnElement
from starlette.concurrency import run_in_threadpool

from linewatch.api.metrics import EVENT_CLIENTS
from linewatch.api.routes import Cursor, Limit, When, parse_when
from linewatch.pipeline import keys
from linewatch.pipeline.decide.ng_rule import ng_sql
from linewatch.pipeline.storage import database
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.storage.reporting import Window, build_report
from linewatch.pipeline.streams import broker, pubsub
from linewatch.pipeline.video import camera_state

if TYPE_CHECKING:  # app.py imports this module
    from linewatch.api.app import ApiContext

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")
WAKE_S = 1.0  # an event stream looks this often whether its client left or the server stops
KEEP_ALIVE_S = 15.0  # a comment after this long without an event keeps proxies from closing
Camera = Annotated[str | None, Query(max_length=128)]


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def _ng(ctx: ApiContext) -> ColumnElement[bool]:
    """The NG rule over the parts table with this line's `verdict.on_uninspected`."""
    return ng_sql(ctx.settings.verdict.rejects_uninspected)


@router.get("/cameras", summary="Cameras: state, parts/min, NG rate, model version")
def cameras(
    request: Request,
    window_min: Annotated[float, Query(gt=0, le=1440, description="rate window")] = 10,
) -> dict[str, Any]:
    ctx = _ctx(request)
    since = datetime.now(timezone.utc) - timedelta(minutes=window_min)
    configured = [c.id for c in ctx.settings.cameras]
    parts = queries.camera_parts(ctx.engine, since, configured, _ng(ctx))
    ids = configured + sorted(set(parts) - set(configured))
    client = ctx.redis
    backlog = broker.backlog(client, ctx.settings.frames_stream) if client else None
    return {
        "line": ctx.settings.line,
        "window_min": window_min,
        "backlog": backlog,
        "cameras": [_camera(ctx, camera, parts.get(camera), window_min) for camera in ids],
    }


def _camera(
    ctx: ApiContext, camera: str, parts: queries.CameraParts | None, window: float
) -> dict[str, Any]:
    state, since = _state(ctx, camera)
    return {
        "id": camera,
        "configured": any(c.id == camera for c in ctx.settings.cameras),
        "state": state,
        "state_since": since,
        "parts": parts.parts if parts else 0,
        "rejected": parts.rejected if parts else 0,
        "parts_per_min": (parts.parts / window) if parts else 0.0,
        "ng_rate": parts.ng_rate if parts else 0.0,
        "model_version": parts.model_version if parts else None,
        "last_part_at": parts.last_part_at if parts else None,
    }


def _state(ctx: ApiContext, camera: str) -> tuple[str | None, str | None]:
    """The camera's ingest state and since when (from Redis; None without Redis)."""
    if ctx.redis is None:
        return None, None
    state = ctx.redis.hget(ctx.settings.camera_key(camera, keys.INGEST), "state")
    last = camera_state.history(ctx.redis, ctx.settings.camera_key(camera, keys.STATES), 1)
    since = None
    if last:
        since = datetime.fromtimestamp(int(last[0]["ts"]) / 1e9, timezone.utc).isoformat()
    return (state.decode() if state else "not seen"), since


@router.get("/alerts", summary="Alerts, newest first (keyset pages)")
def alerts(
    request: Request,
    camera: Camera = None,
    since: When = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    page = queries.list_alerts(
        _ctx(request).engine, camera, parse_when("since", since), limit, cursor
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/report", summary="The defect report of a window, with review rates")
def report(
    request: Request,
    since: Annotated[str, Query(description="UTC date, date-time or an age like 24h")],
    until: When = None,
    camera: Camera = None,
) -> dict[str, Any]:
    start = parse_when("since", since)
    end = parse_when("until", until) or datetime.now(timezone.utc)
    assert start is not None
    if start >= end:
        raise HTTPException(422, f"since ({start.isoformat()}) must be before until")
    ctx = _ctx(request)
    engine = ctx.engine
    built = build_report(engine, Window(start, end, camera))
    return {
        **_jsonable(built),
        "frames": built.frames,
        "defects": built.defects,
        "parts_per_hour": queries.ng_rate_per_hour(engine, start, _ng(ctx), camera),
        "reviews": queries.review_rates(engine, start),
    }


@router.get("/stats/hourly", summary="Parts and NG rate per UTC hour (the dashboard chart)")
def hourly(request: Request, since: When = "24h", camera: Camera = None) -> dict[str, Any]:
    start = parse_when("since", since)
    assert start is not None
    ctx = _ctx(request)
    return {"hours": queries.ng_rate_per_hour(ctx.engine, start, _ng(ctx), camera)}


def _jsonable(value: Any) -> Any:
    """Dataclasses (with their rate properties), datetimes and tuples as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("defect_rate", "agreement"):
            if hasattr(value, name):
                out[name] = getattr(value, name)
        return out
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


@router.get(
    "/events",
    summary="Server-sent events: `verdict` (PartVerdict + row id) and `alert` (AlertMessage)",
    response_class=StreamingResponse,
)
async def events(request: Request) -> StreamingResponse:
    ctx = _ctx(request)
    if not ctx.settings.has_redis:
        raise HTTPException(503, "no redis_url configured: live events come from Redis pub/sub")
    channels = {
        ctx.settings.outputs.pubsub.verdicts_channel: "verdict",
        ctx.settings.outputs.pubsub.alerts_channel: "alert",
    }
    return StreamingResponse(
        _event_stream(request, channels),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(request: Request, channels: dict[str, str]) -> AsyncIterator[str]:
    EVENT_CLIENTS.inc()
    try:
        async for chunk in _events(request, channels):
            yield chunk
    finally:
        EVENT_CLIENTS.dec()


async def _events(request: Request, channels: dict[str, str]) -> AsyncIterator[str]:
    ctx = _ctx(request)
    target = ctx.settings.redis or ctx.settings.redis_url
    assert target is not None
    listening = pubsub.listen(target, list(channels), idle_s=WAKE_S)
    async with aclosing(listening) as messages:  # unsubscribes as soon as the client goes
        await anext(messages)  # subscribed now, so nothing published from here is missed
        yield "retry: 2000\n: subscribed\n\n"
        last_sent = time.monotonic()
        async for message in messages:
            if ctx.stopping.is_set() or await request.is_disconnected():
                break  # the browser reconnects to the next server by itself
            if message is None and time.monotonic() - last_sent < KEEP_ALIVE_S:
                continue
            last_sent = time.monotonic()
            yield await _event(ctx, channels, message)


async def _event(ctx: ApiContext, channels: dict[str, str], message: tuple[str, str] | None) -> str:
    """One SSE frame: a keep-alive comment, or `event: verdict|alert` with its JSON."""
    if message is None:
        return f": keep-alive {time.time():.0f}\n\n"
    channel, data = message
    kind = channels.get(channel, "message")
    if kind == "verdict":
        data = await run_in_threadpool(_with_row, ctx.engine, data)
    lines = "\ndata: ".join(data.splitlines())  # SSE: a data line may not hold a newline
    return f"event: {kind}\ndata: {lines}\n\n"


def _with_row(engine: Any, data: str) -> str:
    """A published verdict with its parts row id and evidence URL, when the row is there."""
    try:
        verdict = json.loads(data)
        row = queries.get_part_by_key(
            engine, verdict["camera_id"], int(verdict["part_id"]), verdict["model_version"]
        )
    except (ValueError, KeyError, TypeError):  # not a PartVerdict: passed on as it came
        return data
    except database.DatabaseError as exc:  # the live feed goes on without the row
        log.warning("verdict not matched to its parts row: %s", type(exc).__name__)
        return data
    if row is not None:
        verdict.update(
            id=row["id"], evidence_url=row["evidence_url"], class_scores=row["class_scores"]
        )
    return json.dumps(verdict, sort_keys=True)
