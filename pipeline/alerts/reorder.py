"""Put each camera's frame outcomes back in seq order before the alert rule sees them.

Several inference workers finish batches out of order. Outcomes are released in
seq order; a missing seq (a frame that will never come) is waited for at most
`hold_s`, then skipped. Nothing else is held: a crashed sink loses only frames that
were waiting on a gap (their rows are written; only their vote in the rule is lost).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from linewatch.pipeline.alerts.rule import FrameOutcome


@dataclass
class _Camera:
    heap: list[tuple[int, float, FrameOutcome]] = field(default_factory=list)
    next_seq: int | None = None


class ReorderBuffer:
    def __init__(self, hold_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self.clock = clock
        self._cameras: dict[str, _Camera] = {}

    def push(self, outcome: FrameOutcome) -> list[FrameOutcome]:
        camera = self._cameras.setdefault(outcome.camera_id, _Camera())
        heapq.heappush(camera.heap, (outcome.seq, self.clock(), outcome))
        return self._release(camera)

    def due(self) -> list[FrameOutcome]:
        """Outcomes whose wait is over (call when idle, too)."""
        return [o for camera in self._cameras.values() for o in self._release(camera)]

    def drain(self) -> list[FrameOutcome]:
        """Everything held, in seq order per camera (at shutdown)."""
        out = []
        for camera in self._cameras.values():
            while camera.heap:
                out.append(heapq.heappop(camera.heap)[2])
            camera.next_seq = None
        return out

    def waiting(self) -> int:
        return sum(len(camera.heap) for camera in self._cameras.values())

    def _release(self, camera: _Camera) -> list[FrameOutcome]:
        released = []
        now = self.clock()
        while camera.heap:
            seq, arrived, outcome = camera.heap[0]
            in_order = camera.next_seq is None or seq <= camera.next_seq
            if not in_order and now - arrived < self.hold_s:
                break
            heapq.heappop(camera.heap)
            camera.next_seq = max(camera.next_seq or 0, seq + 1)
            released.append(outcome)
        return released
