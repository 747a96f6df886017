"""Redis pub/sub read asynchronously (the HTTP API's /v1/events).

Channels: `alerts.channel` (AlertMessage JSON, published by the sink's notifier) and
`Settings.verdicts_channel` = `lw:verdicts:<line>` (PartVerdict JSON, one per part).
Pub/sub is fire-and-forget: a listener sees what is published while it listens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis


async def listen(
    url: str, channels: Sequence[str], idle_s: float = 15.0
) -> AsyncIterator[tuple[str, str] | None]:
    """Yield (channel, message) as they arrive, and None after `idle_s` of silence (so a
    caller can send a keep-alive or notice that its client left)."""
    client = aioredis.from_url(url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(*channels)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=idle_s)
            if message is None:
                yield None
                continue
            channel, data = message["channel"], message["data"]
            yield _text(channel), _text(data)
    finally:
        await asyncio.shield(_close(pubsub, client))


async def _close(pubsub: aioredis.client.PubSub, client: aioredis.Redis) -> None:
    await pubsub.aclose()
    await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
