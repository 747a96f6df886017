"""Redis pub/sub read asynchronously (the HTTP API's /v1/events).

Channels: `outputs.pubsub.alerts_channel` (AlertMessage JSON, published by the sink's notifier) and
`outputs.pubsub.verdicts_channel` (PartVerdict JSON, one per part).
Pub/sub is fire-and-forget: a listener sees what is published while it listens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from linewatch.pipeline.streams import sentinel

if TYPE_CHECKING:
    from linewatch.pipeline.config import RedisSettings

SUBSCRIBE_TIMEOUT_S = 5.0


async def listen(
    target: str | RedisSettings, channels: Sequence[str], idle_s: float = 15.0
) -> AsyncIterator[tuple[str, str] | None]:
    """Yield None once every channel is subscribed (Redis confirmed it), then (channel,
    message) as they arrive, and None after `idle_s` of silence (so a caller can send a
    keep-alive or notice that its client left). `target`: a Redis URL or the Sentinel
    settings (the primary's pub/sub)."""
    client = aioredis.from_url(target) if isinstance(target, str) else sentinel.aio_client(target)
    pubsub = client.pubsub()
    try:
        early = await _subscribe(pubsub, channels)
        yield None
        for message in early:
            yield _pair(message)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=idle_s)
            yield _pair(message) if message is not None else None
    finally:
        await asyncio.shield(_close(pubsub, client))


async def _subscribe(pubsub: aioredis.client.PubSub, channels: Sequence[str]) -> list[Any]:
    """Subscribe and wait for the confirmations; messages that arrive meanwhile are kept."""
    await pubsub.subscribe(*channels)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SUBSCRIBE_TIMEOUT_S
    confirmed, early = 0, []
    while confirmed < len(set(channels)) and loop.time() < deadline:
        message = await pubsub.get_message(timeout=1.0)
        if message is None:
            continue
        if message["type"] == "subscribe":
            confirmed += 1
        else:
            early.append(message)
    return early


def _pair(message: Any) -> tuple[str, str]:
    return _text(message["channel"]), _text(message["data"])


async def _close(pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
    await pubsub.aclose()
    await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
