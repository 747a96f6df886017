"""One active sink per line: a lease in Redis, held while the process lives.

The sink's outbox, line alarms and verdict deadlines assume one sink decides a line's
parts (two would announce a verdict twice to a reject gate). A second sink started for
the same line waits as a hot standby until the lease is free, then takes over (its
consumer claims the dead sink's pending entries as usual). The lease is a key holding
the holder's consumer name with a TTL, renewed by a background thread: it expires
`ttl_s` after the holder dies, however long its current batch waits on a database.
A sink restarted under the same consumer name (`linewatch run` after a crash) takes
its own lease back at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

# Extend the TTL only while the key still names us (another may hold it by now).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """The key `key` holding `owner` for `ttl_s` seconds at a time."""

    def __init__(self, client: redis.Redis, *, key: str, owner: str, ttl_s: float) -> None:
        self.client, self.key, self.owner = client, key, owner
        self.ttl_ms = int(ttl_s * 1000)

    def try_acquire(self) -> bool:
        """Take the lease if it is free or already ours."""
        if self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend the lease; False when another holds it (or it expired and is free)."""
        return bool(self.client.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.owner)

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def wait(self, stopped: Callable[[float], bool], poll_s: float) -> bool:
        """Block until the lease is ours (True) or `stopped(poll_s)` says stop (False)."""
        announced = False
        while not self.try_acquire():
            if not announced:
                log.warning(
                    "standby: %s is the active sink of this line (%s); %s takes over when "
                    "its lease lapses",
                    self.holder(),
                    self.key,
                    self.owner,
                )
                announced = True
            if stopped(poll_s):
                return False
        if announced:
            log.warning("%s took over the sink lease %s", self.owner, self.key)
        return True

    def keep(self, on_lost: Callable[[], None]) -> threading.Event:
        """Renew every third of the TTL in a daemon thread; `on_lost()` once the lease is
        someone else's. Set the returned event to end the thread."""
        done = threading.Event()

        def renew_until_done() -> None:
            while not done.wait(self.ttl_ms / 3000):
                try:
                    held = self.try_acquire()  # a free key (Redis restarted empty) is retaken
                except redis.RedisError as exc:  # an outage: the key may outlive it
                    log.warning("cannot renew the sink lease %s (%s)", self.key, exc)
                    continue
                if not held:
                    log.error(
                        "%s lost the sink lease %s to %s; stopping so that one sink decides",
                        self.owner,
                        self.key,
                        self.holder(),
                    )
                    on_lost()
                    return

        threading.Thread(target=renew_until_done, name="sink-lease", daemon=True).start()
        return done
