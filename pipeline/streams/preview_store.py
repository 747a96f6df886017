"""A camera's live view in Redis: one hash per camera (JPEG + boxes), overwritten at a
bounded rate and kept for `ttl_s` after its last write, so it never builds a backlog."""

from __future__ import annotations

from collections.abc import Mapping

from linewatch.pipeline.streams.broker import Client


def put(client: Client, key: str, fields: Mapping[str, bytes], ttl_s: int) -> None:
    """Replace the camera's view with `fields` (one round trip)."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=dict(fields))
    pipe.expire(key, ttl_s)
    pipe.execute()


def get(client: Client, key: str) -> dict[bytes, bytes] | None:
    """The camera's last view, None when there is none (never taken, or expired)."""
    fields = client.hgetall(key)
    return fields or None
