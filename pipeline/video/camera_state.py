"""Per-camera connection state machine, with every transition recorded.

    connecting ─► streaming ─► stalled ─► backoff ─► connecting …
         │            │                     ▲
         └────────────┴─────────────────────┘ (open failed / stream ended)
    any state ─► stopped (shutdown, or a file that was read to its end)

Transitions go to the log, to the `linewatch_camera_state` metric, to the
camera's ingest hash (field `state`, read by `linewatch status`) and to a
capped Redis stream `lw:states:<line>:<camera>` (from, to, reason, ts) so an
operator can see when and why a camera dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum

from linewatch.pipeline import metrics
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)

HISTORY_LEN = 1000  # transitions kept per camera


class CameraState(str, Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    BACKOFF = "backoff"
    STOPPED = "stopped"


ALLOWED: dict[CameraState | None, frozenset[CameraState]] = {
    None: frozenset({CameraState.CONNECTING, CameraState.STOPPED}),
    CameraState.CONNECTING: frozenset(
        {CameraState.STREAMING, CameraState.BACKOFF, CameraState.STOPPED}
    ),
    CameraState.STREAMING: frozenset(
        {CameraState.STALLED, CameraState.BACKOFF, CameraState.STOPPED}
    ),
    CameraState.STALLED: frozenset({CameraState.BACKOFF, CameraState.STOPPED}),
    CameraState.BACKOFF: frozenset({CameraState.CONNECTING, CameraState.STOPPED}),
    CameraState.STOPPED: frozenset(),
}

Recorder = Callable[[CameraState | None, CameraState, str], None]


class InvalidTransition(RuntimeError):
    """A transition the state machine does not allow (a bug, not bad input)."""


class CameraStateMachine:
    def __init__(self, camera_id: str, recorders: list[Recorder] | None = None) -> None:
        self.camera_id = camera_id
        self.state: CameraState | None = None
        self.recorders = recorders or []

    def enter(self, new: CameraState, reason: str = "") -> None:
        """Move to `new` (no-op when already there), recording the transition."""
        if new == self.state:
            return
        if new not in ALLOWED[self.state]:
            old = self.state.value if self.state else "start"
            raise InvalidTransition(f"camera {self.camera_id}: {old} -> {new.value} not allowed")
        old, self.state = self.state, new
        log.info("camera %s: %s%s", self.camera_id, new.value, f" ({reason})" if reason else "")
        metrics.CAMERA_STATE.labels(self.camera_id).state(new.value)
        for record in self.recorders:
            record(old, new, reason)


def redis_recorder(
    client: broker.Client, history_key: str, ingest_key: str, wait: Callable[[float], bool]
) -> Recorder:
    """Records transitions in Redis, waiting out an outage (a shutdown ends the wait)."""

    def record(old: CameraState | None, new: CameraState, reason: str) -> None:
        fields = {
            "from": old.value if old else "",
            "to": new.value,
            "reason": reason,
            "ts": time.time_ns(),
        }

        def write() -> None:
            with broker.transaction(client) as pipe:
                pipe.xadd(history_key, fields, maxlen=HISTORY_LEN, approximate=True)
                pipe.hset(ingest_key, "state", new.value)
                pipe.execute()

        try:
            broker.with_retry(write, wait, "camera state")
        except broker.Interrupted:
            log.warning("camera %s: state %s not recorded (stopping)", ingest_key, new.value)

    return record


def history(client: broker.Client, history_key: str, count: int = 50) -> list[dict[str, str]]:
    """The last `count` transitions, oldest first."""
    entries = client.xrevrange(history_key, count=count)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in reversed(entries)]
