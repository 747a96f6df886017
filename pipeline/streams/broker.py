"""Redis: the client (connect, retries) and the stream commands of the pipeline.

Frames and results travel as stream entries read through consumer groups.
Entries are acknowledged by the reader only after their effect is durable.

Only pipeline/streams/ imports redis. Other modules send a few commands of their
own on a client from here, each on the keys it owns (names in pipeline/keys.py):
streams/consumer.py (worker heartbeats), streams/dead_letters.py (the dead-letter
stream), video/camera_state.py (a camera's state history), inference/switching.py
(the requested model), workers/ingest.py (seq numbers, per-camera counters), and,
reading only, linewatch/line.py, status.py and cli.py (counters, heartbeats).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import redis

from linewatch.pipeline import metrics
from linewatch.pipeline.errors import ConfigError, ServiceUnavailable
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.retry import Interrupted as Interrupted  # what with_retry raises
from linewatch.pipeline.retry import retry
from linewatch.pipeline.streams import sentinel

if TYPE_CHECKING:
    from linewatch.pipeline.config import RedisSettings, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
DEAD_FIELD_PREFIX = b"f:"
Entry = tuple[bytes, dict[bytes, bytes]]
RedisError = redis.RedisError
Client = redis.Redis
ADDRESS_FILE = "address"  # <data_dir>/redis/address: the embedded Redis of a running line


def with_retry(call: Callable[[], T], wait: Callable[[float], bool], what: str) -> T:
    """`call()`, retried with capped backoff while Redis is unreachable. `wait(seconds)`
    sleeps and returns True when the caller is stopping: then Interrupted is raised."""
    return retry(
        call,
        redis.RedisError,
        wait,
        lambda exc, delay: note_retry(exc, what, delay),  # type: ignore[arg-type]
        stopped=f"stopped while Redis was unavailable ({what})",
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write because `maxmemory` is reached (alone or inside MULTI)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in str(exc)


def note_retry(exc: redis.RedisError, what: str, delay: float) -> None:
    """Log (naming the cause and what to do) and count a Redis call about to be retried."""
    if is_out_of_memory(exc):
        metrics.REDIS_RETRIES.labels("oom").inc()
        log.warning(
            "Redis is out of memory (maxmemory reached) during %s: nothing is dropped, "
            "the work waits here; raise Redis maxmemory, add inference/sink workers "
            "or lower ingest.max_stream_len; retrying in %.1f s",
            what,
            delay,
        )
    else:
        metrics.REDIS_RETRIES.labels("unavailable").inc()
        log.warning(
            "Redis unavailable during %s (%s); retrying in %.1f s",
            what,
            exc.__class__.__name__,
            delay,
        )


def connect_to(settings: Settings, who: str, attempts: int = 1) -> redis.Redis:
    """The line's Redis client, the one way every role connects: through Sentinel
    (`redis.sentinels`, following the primary), to `redis_url`, or else to the embedded
    Redis of the line running on `data_dir` (its address file); a ConfigError saying
    `who` found no line there when none runs."""
    if settings.redis is not None:
        return sentinel.connect(settings.redis, attempts)
    if settings.redis_url:
        return connect(settings.redis_url, attempts)
    url = embedded_url(settings.data_dir)  # a line running on the embedded defaults
    if url is None:
        raise ConfigError(
            f"{who}: no line is running on data_dir {settings.data_dir} (no live address in "
            f"{address_file(settings.data_dir)}): start it with `linewatch run --config "
            "LINE.yaml`, or set redis_url (LINEWATCH_REDIS_URL) or redis.sentinels"
        )
    return connect(url, attempts)


def address_file(data_dir: Path) -> Path:
    """Where a running line's embedded Redis writes its URL (removed on a clean stop)."""
    return data_dir / "redis" / ADDRESS_FILE


def embedded_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis of the line running on `data_dir`, or None when no
    line runs there: no address file, or a stale one whose server does not answer PING
    (or answers, but is another server on the port since: its folder is not this one)."""
    try:
        url = address_file(data_dir).read_text().strip()
    except OSError:
        return None
    if not url.startswith("redis://"):
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
        folder = client.config_get("dir").get("dir")  # not another server on a reused port
    except redis.RedisError:
        return None  # a server that died without removing its file
    finally:
        client.close()
    return url if folder == str(address_file(data_dir).parent.resolve()) else None


def describe(settings: Settings) -> str:
    """Where the line's Redis is, without secrets (for logs and `linewatch check`)."""
    if settings.redis is not None:
        where = ", ".join(settings.redis.sentinels)
        return f"Sentinel service '{settings.redis.service}' via {where}"
    return redact_url(settings.redis_url or "")


def connect(url: str, attempts: int = 1, delay_s: float = 0.5) -> redis.Redis:
    """A client for `url`, checked with PING; ServiceUnavailable names the URL."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    for attempt in range(attempts):
        try:
            client.ping()
            return client
        except redis.RedisError as exc:
            if attempt + 1 == attempts:
                raise ServiceUnavailable(_connect_message(url, exc)) from exc
            time.sleep(delay_s)
    raise AssertionError("unreachable")


def _connect_message(url: str, exc: redis.RedisError) -> str:
    if isinstance(exc, redis.AuthenticationError):
        return (
            f"Redis at {redact_url(url)} refused the credentials ({exc}); "
            "fix the password in redis_url / LINEWATCH_REDIS_URL"
        )
    return (
        f"cannot reach Redis at {redact_url(url)} ({exc.__class__.__name__}); "
        "start Redis or fix redis_url / LINEWATCH_REDIS_URL"
    )


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


Batch = tuple[str, Sequence[dict[bytes, bytes]], int | None]  # stream, entries, maxlen
Batches = Sequence[Batch]


def add_to_streams(
    client: redis.Redis, batches: Batches, replicas: RedisSettings | None = None
) -> list[bytes]:
    """XADD (stream, entries, maxlen) batches to several streams in one MULTI, all or none:
    ingest adds part views to the frames stream and part ends to the results stream.
    With `replicas` (Sentinel), the MULTI is followed by WAIT on the same connection:
    see add_and_wait."""
    if replicas is not None and replicas.wait_replicas:
        return add_and_wait(client, batches, replicas)
    pipe = client.pipeline(transaction=True)
    for stream, entries, maxlen in batches:
        add_to(pipe, stream, entries, maxlen)
    return pipe.execute()


def add_and_wait(client: redis.Redis, batches: Batches, replicas: RedisSettings) -> list[bytes]:
    """MULTI, the XADDs, EXEC, then WAIT in one round trip on one connection (WAIT covers
    only its own connection's writes): when this returns, the batch is on a replica unless
    the WAIT came short (counted; see ReplicaWait). A primary lost before the reply raises,
    so the caller sends the batch again (seq and part ids dedupe it). Batches no replica
    confirmed are kept, and sent again, ahead of the next, once a different server answers
    (the primary they were on is gone, and a failover may have lost them). Returns the
    entry ids of `batches`."""
    state = _replica_wait(client)
    resend = state.resend
    sent = [*resend, *batches]
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("MULTI")
    for stream, entries, maxlen in sent:
        add_to(pipe, stream, entries, maxlen)
    pipe.execute_command("EXEC")
    pipe.execute_command("WAIT", replicas.wait_replicas, state.timeout_ms(replicas))
    pipe.execute_command("INFO", "server")  # which server took the writes
    *_, added, confirmed, server = pipe.execute()
    state.resend = []
    lost = state.written(sent, str(server["run_id"]), int(confirmed), replicas.wait_replicas)
    if lost:
        log.warning(
            "Redis primary changed: sending again %d entries written before the change "
            "that no replica had confirmed (duplicates are skipped downstream)",
            sum(len(entries) for _, entries, _ in lost),
        )
        state.resend = lost  # kept until sent: a failure here retries them with the caller's
        add_and_wait(client, [], replicas)
    return list(added)[sum(len(entries) for _, entries, _ in resend) :]


class ReplicaWait:
    """What one client's WAITs found. After a WAIT that came short (no replica left after a
    failover, or one far behind), the next batches probe with a PROBE_MS timeout for
    PROBE_S instead of waiting `wait_timeout_ms` each (which would slow ingest to a few
    batches a second); a probe that is confirmed ends that, and after PROBE_S one full
    WAIT tries again. PROBE_MS is not 1: a replica's acknowledgement takes more than a
    millisecond on a loaded host, so 1 ms probes kept coming short after the replica was
    back.

    Batches whose WAIT came short are kept (up to MAX_UNCONFIRMED_BYTES, oldest dropped
    first) until a WAIT on the same server confirms a later write (replication is in
    order, so that covers them), or are handed back to be sent again when a different
    server answers: a replica restarted and synced but not yet streaming, or none at all,
    when the primary died (3 of 16 parts lost in tests/test_sentinel_line.py before)."""

    PROBE_S = 5.0
    PROBE_MS = 20
    MAX_UNCONFIRMED_BYTES = 64 * 2**20

    def __init__(self) -> None:
        self.probe_until = 0.0
        self.server: str | None = None  # run_id of the server that holds `unconfirmed`
        self.unconfirmed: deque[tuple[Batch, int]] = deque()  # (batch, its bytes)
        self.unconfirmed_bytes = 0
        self.resend: list[Batch] = []  # kept batches a changed server may have lost

    def timeout_ms(self, replicas: RedisSettings) -> int:
        if time.monotonic() < self.probe_until:
            return min(self.PROBE_MS, replicas.wait_timeout_ms)
        return replicas.wait_timeout_ms

    def written(self, batches: Batches, server: str, count: int, wanted: int) -> Batches:
        """Note batches written to `server` with `count` replicas confirming; the batches
        kept from a different server, to send again."""
        moved = self.server not in (None, server)
        lost = [batch for batch, _ in self.unconfirmed] if moved else []
        if moved or count >= wanted:
            self.unconfirmed.clear()
            self.unconfirmed_bytes = 0
        self.server = server
        self.confirmed(count, wanted)
        if count < wanted:
            self._keep(batches)
        return lost

    def _keep(self, batches: Batches) -> None:
        for batch in batches:
            size = _size(batch[1])
            self.unconfirmed.append((batch, size))
            self.unconfirmed_bytes += size
        while self.unconfirmed_bytes > self.MAX_UNCONFIRMED_BYTES:
            _, size = self.unconfirmed.popleft()
            self.unconfirmed_bytes -= size

    def confirmed(self, count: int, wanted: int) -> None:
        if count >= wanted:
            if self.probe_until:
                log.info("WAIT: %d replicas confirm writes again", count)
            self.probe_until = 0.0
            return
        metrics.REDIS_WAIT_SHORT.inc()
        if time.monotonic() >= self.probe_until:
            if not self.probe_until:
                log.warning(
                    "WAIT: %d of %d replicas confirmed within redis.wait_timeout_ms: writes go "
                    "on unreplicated until a replica catches up (checked every %.0f s); they "
                    "are kept here and sent again if the primary changes",
                    count,
                    wanted,
                    self.PROBE_S,
                )
            self.probe_until = time.monotonic() + self.PROBE_S


def _size(entries: Sequence[dict[bytes, bytes]]) -> int:
    return sum(len(key) + len(value) for fields in entries for key, value in fields.items())


_REPLICA_WAITS: dict[int, ReplicaWait] = {}


def _replica_wait(client: redis.Redis) -> ReplicaWait:
    return _REPLICA_WAITS.setdefault(id(client), ReplicaWait())


def reserve_numbers(client: redis.Redis, key: str, count: int, floor: int) -> int:
    """The last of `count` new numbers of the counter `key` (INCRBY). A counter behind
    `floor` (the last number the caller used: it was lost with a Redis restart without
    persistence) is first set to `floor`, so numbers never repeat."""
    last = int(client.incrby(key, count))
    if last - count < floor:
        client.set(key, floor)
        last = int(client.incrby(key, count))
    return last


def add_to(
    pipe: redis.client.Pipeline,
    stream: str,
    entries: Sequence[dict[bytes, bytes]],
    maxlen: int | None = None,
) -> None:
    """Queue XADDs on a pipeline or transaction."""
    for fields in entries:
        pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)


def read_group(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    count: int,
    block_ms: int | None,
) -> list[Entry]:
    """New entries for this consumer (blocks up to `block_ms`; None = do not block)."""
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    if not reply:
        return []
    return [(entry_id, fields) for entry_id, fields in reply[0][1] if fields is not None]


def read_own_pending(
    client: redis.Redis, stream: str, group: str, consumer: str, count: int
) -> list[Entry]:
    """Entries delivered to this consumer before and not yet acknowledged (after a restart)."""
    reply = client.xreadgroup(group, consumer, {stream: "0"}, count=count)
    if not reply:
        return []
    return [(entry_id, fields) for entry_id, fields in reply[0][1] if fields]


def claim_idle(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int,
) -> list[Entry]:
    """Take over entries another consumer left pending for `min_idle_ms` (XAUTOCLAIM)."""
    reply = client.xautoclaim(stream, group, consumer, min_idle_ms, "0-0", count=count)
    return [(entry_id, fields) for entry_id, fields in reply[1] if fields]


def ack_and_delete(
    pipe: redis.client.Pipeline, stream: str, group: str, ids: Sequence[bytes]
) -> None:
    """Queue XACK + XDEL of `ids` on `pipe`: a stream holds only what is still to be done."""
    if ids:
        pipe.xack(stream, group, *ids)
        pipe.xdel(stream, *ids)


def transaction(client: redis.Redis) -> redis.client.Pipeline:
    """A MULTI/EXEC pipeline: results are added and frames acknowledged atomically."""
    return client.pipeline(transaction=True)


def dead_letter(
    pipe: redis.client.Pipeline,
    stream: str,
    source: str,
    entry_id: bytes,
    reason: str,
    fields: dict[bytes, bytes],
) -> None:
    """Queue an undeliverable entry on the dead-letter stream with the reason."""
    payload = {b"source": source.encode(), b"entry_id": entry_id, b"reason": reason.encode()[:500]}
    payload.update({DEAD_FIELD_PREFIX + key: value for key, value in fields.items()})
    pipe.xadd(stream, payload, maxlen=100_000, approximate=True)


def backlog(client: redis.Redis, stream: str) -> int:
    """Entries still to be done: readers delete what they acknowledge, so this is XLEN."""
    return int(client.xlen(stream))


def add_counts(pipe: redis.client.Pipeline, key: str, counts: Mapping[str, int]) -> None:
    """Queue HINCRBY of each non-zero count into the hash `key`."""
    for name, value in counts.items():
        if value:
            pipe.hincrby(key, name, value)


def heartbeat(client: redis.Redis, key: str, ttl_s: int, fields: Mapping[str, str | int]) -> None:
    """Mark a worker alive: a hash that expires unless refreshed within `ttl_s`."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping=dict(fields))
    pipe.expire(key, ttl_s)
    pipe.execute()


def pending(client: redis.Redis, stream: str, group: str) -> int:
    """Entries delivered to the group's consumers and not yet acknowledged."""
    try:
        return int(client.xpending(stream, group)["pending"])
    except redis.ResponseError:  # no such group yet
        return 0


def live_keys(client: redis.Redis, pattern: str) -> list[str]:
    return sorted(key.decode() for key in client.scan_iter(match=pattern, count=1000))


def publish(client: redis.Redis, channel: str, message: str) -> None:
    """PUBLISH `message` on a pub/sub channel (alerts); stream entries are *added*."""
    client.publish(channel, message)


# SET NX and PUBLISH in one script: a process killed in between cannot publish twice.
_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return 1
end
return 0
"""


def publish_once(client: redis.Redis, channel: str, message: str, marker: str, ttl_s: int) -> bool:
    """PUBLISH unless `marker` was set by an earlier call (kept `ttl_s`); True if published."""
    return bool(client.eval(_PUBLISH_ONCE, 1, marker, channel, message, ttl_s))
