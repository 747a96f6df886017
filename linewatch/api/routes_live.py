"""/v1 routes for a camera's live view: its latest frame with the part boxes drawn in
their verdict's colour, as one JPEG or as an MJPEG stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from linewatch.pipeline import keys
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.streams import preview_store
from linewatch.pipeline.video.preview import Preview, draw

if TYPE_CHECKING:  # app.py imports this module
    from linewatch.api.app import ApiContext

router = APIRouter(prefix="/v1")
BOUNDARY = "frame"
CameraId = Annotated[str, Path(max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def render(ctx: ApiContext, camera_id: str) -> tuple[bytes, bool]:
    """(the camera's live view as a JPEG with its boxes drawn, whether it stopped);
    HTTPException when there is none to show."""
    if ctx.redis is None:
        raise HTTPException(503, "no Redis configured: the live view lives there")
    fields = preview_store.get(ctx.redis, ctx.settings.camera_key(camera_id, keys.PREVIEW))
    if fields is None:
        raise HTTPException(404, f"no live view of camera {camera_id} (not running, or off)")
    try:
        preview = Preview.decode(fields)
    except ValueError as exc:
        raise HTTPException(500, f"camera {camera_id}: {exc}") from exc
    ids = [box.part_id for box in preview.boxes if box.part_id is not None]
    verdicts = queries.part_verdicts(ctx.engine, camera_id, ids)
    return draw(preview, verdicts), preview.stopped


@router.get(
    "/cameras/{camera_id}/preview.jpg",
    summary="The camera's latest frame with its parts' boxes (OK green, NG red, pending "
    "grey, uninspected amber)",
    response_class=Response,
)
def preview_jpeg(request: Request, camera_id: CameraId) -> Response:
    jpeg, stopped = render(_ctx(request), camera_id)
    headers = {"Cache-Control": "no-store", "X-Camera-Stopped": str(stopped).lower()}
    return Response(jpeg, media_type="image/jpeg", headers=headers)


@router.get(
    "/cameras/{camera_id}/live.mjpg",
    summary="The camera's live view as an MJPEG stream (at most ingest.preview_fps)",
    response_class=StreamingResponse,
)
async def live_mjpeg(request: Request, camera_id: CameraId) -> StreamingResponse:
    ctx = _ctx(request)
    first, _ = await run_in_threadpool(render, ctx, camera_id)  # no view: 404 now
    fps = ctx.settings.ingest.preview_fps or 1.0
    return StreamingResponse(
        _frames(request, ctx, camera_id, first, 1.0 / fps),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )


async def _frames(
    request: Request, ctx: ApiContext, camera_id: str, jpeg: bytes, interval_s: float
) -> AsyncIterator[bytes]:
    """Parts of the MJPEG stream, from the `jpeg` already drawn, until the client goes
    (or the view expires)."""
    while not await request.is_disconnected():
        head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
        yield head.encode() + jpeg + b"\r\n"
        await asyncio.sleep(interval_s)
        try:
            jpeg, _ = await run_in_threadpool(render, ctx, camera_id)
        except HTTPException:
            return
