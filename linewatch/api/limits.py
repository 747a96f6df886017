"""Refuse an oversized /v1/classify body before it is parsed (and spooled to disk):
by its Content-Length when sent, else by counting the bytes as they arrive."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_SLACK = 64 * 1024  # part headers and boundaries around the files


class BodyTooLarge(Exception):
    pass


class LimitUploads:
    """ASGI middleware: at most `max_bytes` of request body for the paths given."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], max_bytes: int) -> None:
        self.app, self.paths, self.max_bytes = app, paths, max_bytes + MULTIPART_SLACK

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _refuse(send, int(length), self.max_bytes)
            return
        seen, refused = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge  # the app answers some error: replaced below
            return message

        async def replacing(message: Message) -> None:
            nonlocal refused
            if seen <= self.max_bytes:
                await send(message)
            elif not refused:
                refused = True
                await _refuse(send, seen, self.max_bytes)

        try:
            await self.app(scope, counted, replacing)
        except BodyTooLarge:
            if not refused:
                await _refuse(send, seen, self.max_bytes)


async def _refuse(send: Send, size: int, limit: int) -> None:
    body = json.dumps(
        {"detail": f"request body of {size}+ bytes is over the {limit} byte upload limit"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
