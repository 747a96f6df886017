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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from linewatch.pipeline import defaults, metrics
from linewatch.pipeline.retry import Backoff
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import MessageDecodeError

log = logging.getLogger(__name__)

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


@dataclass(kw_only=True)
class ConsumerLoop:
    """One consumer of a group, built with named collaborators (keywords only)."""

    client: broker.Client
    stream: str
    group: str
    consumer: str
    count: int  # entries per read
    read_new: Callable[[], list[broker.Entry]]
    handle: Callable[[list[broker.Entry]], bool]  # False: stop now, entries stay pending
    heartbeat_key: str
    status: Callable[[], Mapping[str, str | int]]  # fields of the heartbeat hash
    idle: Callable[[], None] | None = None  # called when a read returned nothing
    claim_idle_ms: int = defaults.CLAIM_IDLE_MS
    heartbeat_ttl_s: int = defaults.HEARTBEAT_TTL_S
    _recovering: bool = field(default=True, init=False)
    _last_claim: float = field(default=0.0, init=False)
    _last_beat: float = field(default=0.0, init=False)

    def run(self, stop: StopFlag) -> None:
        """Work until stopped or until `handle` says stop; the heartbeat goes in `finally`."""
        backoff = Backoff()
        try:
            while not stop.is_set():
                metrics.mark_alive()
                try:
                    self.beat_when_due()
                    entries = self.next_entries()
                    if entries and not self.handle(entries):
                        break
                    if not entries and self.idle:
                        self.idle()
                    backoff.reset()
                except broker.RedisError as exc:  # an outage: wait, then resume from own pending
                    delay = backoff.next()
                    broker.note_retry(exc, f"{self.consumer}'s read/handle", delay)
                    self._recovering = True
                    stop.wait(delay)
        finally:
            self.teardown()

    def next_entries(self) -> list[broker.Entry]:
        """Own pending entries while recovering; else, when due, entries idle at dead
        consumers (XAUTOCLAIM); else (or when there were none) new ones."""
        if self._recovering:
            broker.ensure_group(self.client, self.stream, self.group)
            entries = broker.read_own_pending(
                self.client, self.stream, self.group, self.consumer, self.count
            )
            self._recovering = bool(entries)
        elif time.monotonic() - self._last_claim > self.claim_idle_ms / 1000:
            self._last_claim = time.monotonic()
            entries = broker.claim_idle(
                self.client, self.stream, self.group, self.consumer, self.claim_idle_ms, self.count
            )
        else:
            entries = []
        return entries or self.read_new()

    def beat_when_due(self) -> None:
        if time.monotonic() - self._last_beat >= defaults.HEARTBEAT_EVERY_S:
            self._beat()
            self._last_beat = time.monotonic()

    def _beat(self) -> None:
        metrics.BACKLOG.labels(self.stream).set(broker.backlog(self.client, self.stream))
        pending = broker.pending(self.client, self.stream, self.group)
        metrics.PENDING.labels(self.stream, self.group).set(pending)
        fields = {"pid": os.getpid(), "seen": int(time.time()), **self.status()}
        broker.heartbeat(self.client, self.heartbeat_key, self.heartbeat_ttl_s, fields)

    def teardown(self) -> None:
        """Remove the heartbeat: `linewatch status` and `run` stop counting this consumer."""
        try:
            self.client.delete(self.heartbeat_key)
        except broker.RedisError:
            log.warning(
                "%s: heartbeat %s left to expire (Redis unavailable)",
                self.consumer,
                self.heartbeat_key,
            )
