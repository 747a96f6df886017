"""Capped exponential backoff: how every linewatch loop waits before trying again."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from linewatch.pipeline import defaults

T = TypeVar("T")


class Interrupted(Exception):
    """A retry loop was stopped by a shutdown request."""


class Backoff:
    """Waits that double from `first_s` up to `max_s`; `reset()` after a success."""

    def __init__(
        self, first_s: float = defaults.BACKOFF_FIRST_S, max_s: float = defaults.BACKOFF_MAX_S
    ) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.delay = first_s

    def next(self) -> float:
        """The wait to make now; the one after is twice as long (capped)."""
        delay = self.delay
        self.delay = min(self.max_s, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first_s


def retry(
    call: Callable[[], T],
    errors: type[BaseException] | tuple[type[BaseException], ...],
    wait: Callable[[float], bool],
    note: Callable[[BaseException, float], None],
    stopped: str = "stopped while waiting to retry",
    backoff: Backoff | None = None,
) -> T:
    """`call()`, retried with backoff while it raises one of `errors`; `note(exc, delay)`
    logs each failure. `wait(seconds)` sleeps and returns True when the caller is
    stopping: then Interrupted(`stopped`) is raised from the last failure."""
    backoff = backoff or Backoff()
    while True:
        try:
            return call()
        except errors as exc:
            delay = backoff.next()
            note(exc, delay)
            if wait(delay):
                raise Interrupted(stopped) from exc
