"""The consumer-group loop shared by the inference and sink workers.

Order of work: this consumer's own pending entries (after a restart or an
outage), then entries idle too long at dead consumers (XAUTOCLAIM), then new
ones. A Redis outage never kills the loop: it waits with capped backoff and
starts again from its own pending entries, which a replay makes harmless.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from linewatch.pipeline import metrics
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import MessageDecodeError

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 30.0
M = TypeVar("M")


def decode_entries(
    entries: list[broker.Entry],
    decode: Callable[[dict[bytes, bytes]], M],
    pipe: Any,
    source_stream: str,
    dead_stream: str,
) -> list[M]:
    """Decoded messages; malformed entries are queued on `pipe` for the dead-letter stream."""
    messages = []
    for entry_id, fields in entries:
        try:
            messages.append(decode(fields))
        except MessageDecodeError as exc:
            log.warning(
                "entry %s of %s is malformed (%s); moved to %s",
                entry_id.decode(),
                source_stream,
                exc,
                dead_stream,
            )
            broker.dead_letter(pipe, dead_stream, source_stream, entry_id, str(exc), fields)
            metrics.DEAD_LETTERS.labels(source_stream).inc()
    return messages


@dataclass
class ConsumerLoop:
    client: broker.Client
    stream: str
    group: str
    consumer: str
    count: int
    read_new: Callable[[], list[broker.Entry]]
    handle: Callable[[list[broker.Entry]], bool]  # False: stop now, entries stay pending
    heartbeat_key: str
    status: Callable[[], dict[str, str | int]]
    idle: Callable[[], None] | None = None  # called when a read returned nothing
    claim_idle_ms: int = 60_000
    heartbeat_ttl_s: int = 15

    def run(self, stop: StopFlag) -> None:
        delay, recovering = 0.5, True
        last_claim = last_beat = 0.0
        while not stop.is_set():
            metrics.mark_alive()
            try:
                if time.monotonic() - last_beat >= 1.0:
                    self._beat()
                    last_beat = time.monotonic()
                if recovering:
                    broker.ensure_group(self.client, self.stream, self.group)
                    entries = broker.read_own_pending(
                        self.client, self.stream, self.group, self.consumer, self.count
                    )
                    recovering = bool(entries)
                elif time.monotonic() - last_claim > self.claim_idle_ms / 1000:
                    last_claim = time.monotonic()
                    entries = broker.claim_idle(
                        self.client,
                        self.stream,
                        self.group,
                        self.consumer,
                        self.claim_idle_ms,
                        self.count,
                    )
                else:
                    entries = []
                entries = entries or self.read_new()
                if entries and not self.handle(entries):
                    break
                if not entries and self.idle:
                    self.idle()
                delay = 0.5
            except broker.RedisError as exc:
                broker.note_retry(exc, f"{self.consumer}'s read/handle", delay)
                stop.wait(delay)
                delay, recovering = min(BACKOFF_MAX_S, delay * 2), True
        self._forget()

    def _beat(self) -> None:
        metrics.BACKLOG.labels(self.stream).set(broker.backlog(self.client, self.stream))
        pending = broker.pending(self.client, self.stream, self.group)
        metrics.PENDING.labels(self.stream, self.group).set(pending)
        fields = {"pid": os.getpid(), "seen": int(time.time()), **self.status()}
        broker.heartbeat(self.client, self.heartbeat_key, self.heartbeat_ttl_s, fields)

    def _forget(self) -> None:
        try:
            self.client.delete(self.heartbeat_key)
        except broker.RedisError:
            pass
