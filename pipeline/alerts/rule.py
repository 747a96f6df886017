"""Defect events: k of the last n frames defective opens, m clean frames close, then cooldown.

State is kept per (camera, defect class) and driven by frames in seq order.
Time is the frames' capture time, so a replay reaches the same decisions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from linewatch.pipeline.config import AlertSettings

NS = 1_000_000_000
SEEN_LIMIT = 20_000  # frames per camera remembered to ignore replays


@dataclass(frozen=True)
class FrameOutcome:
    camera_id: str
    seq: int
    capture_ts: int
    label: str
    score: float
    is_defect: bool
    clock_ns: int | None = None  # the rule's clock (cooldown); default capture_ts

    @property
    def clock(self) -> int:
        return self.capture_ts if self.clock_ns is None else self.clock_ns


@dataclass(frozen=True)
class DefectEvent:
    camera_id: str
    label: str
    state: str  # "open" | "closed"
    opened_seq: int
    opened_ts: int
    closed_seq: int | None = None
    closed_ts: int | None = None
    peak_score: float = 0.0
    frames: int = 0


@dataclass
class _Track:
    window: deque[bool]
    event: DefectEvent | None = None
    clean_run: int = 0
    cooldown_until_ns: int = 0


class AlertEngine:
    """Feeds frame outcomes through the rule; returns events that opened or closed."""

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._labels: set[str] = set()  # defect classes seen (or resumed) so far
        self._seen: dict[str, set[int]] = {}

    def resume(self, open_events: Iterable[DefectEvent]) -> None:
        """Continue events that were open when the previous sink stopped."""
        for event in open_events:
            self._labels.add(event.label)
            self._track(event.camera_id, event.label).event = event

    def feed(self, outcome: FrameOutcome) -> list[DefectEvent]:
        """Apply one frame. A replayed frame is ignored; a late one (several inference
        workers finish out of order) still counts, in the order it arrives."""
        if not self._first_time(outcome.camera_id, outcome.seq):
            return []
        if outcome.is_defect:
            self._labels.add(outcome.label)
        changes = []
        for label in self._labels:
            track = self._track(outcome.camera_id, label)
            change = self._step(track, outcome, label)
            if change is not None:
                changes.append(change)
        return changes

    def _first_time(self, camera_id: str, seq: int) -> bool:
        seen = self._seen.setdefault(camera_id, set())
        if seq in seen:
            return False
        seen.add(seq)
        if len(seen) > SEEN_LIMIT:
            newest = sorted(seen)[len(seen) // 2 :]
            self._seen[camera_id] = set(newest)
        return True

    def _track(self, camera_id: str, label: str) -> _Track:
        key = (camera_id, label)
        if key not in self._tracks:
            self._tracks[key] = _Track(window=deque(maxlen=self.settings.n))
        return self._tracks[key]

    def _step(self, track: _Track, outcome: FrameOutcome, label: str) -> DefectEvent | None:
        hit = outcome.is_defect and outcome.label == label
        track.window.append(hit)
        if track.event is not None:
            return self._step_open(track, outcome, hit)
        if sum(track.window) >= self.settings.k and outcome.clock >= track.cooldown_until_ns:
            track.event = DefectEvent(
                camera_id=outcome.camera_id,
                label=label,
                state="open",
                opened_seq=outcome.seq,
                opened_ts=outcome.capture_ts,
                peak_score=outcome.score,
                frames=sum(track.window),
            )
            track.clean_run = 0
            return track.event
        return None

    def _step_open(self, track: _Track, outcome: FrameOutcome, hit: bool) -> DefectEvent | None:
        event = track.event
        assert event is not None
        if hit:
            track.clean_run = 0
            track.event = replace(
                event, frames=event.frames + 1, peak_score=max(event.peak_score, outcome.score)
            )
            return None
        track.clean_run += 1
        if track.clean_run < self.settings.m:
            return None
        closed = replace(
            event, state="closed", closed_seq=outcome.seq, closed_ts=outcome.capture_ts
        )
        track.event = None
        track.window.clear()
        track.cooldown_until_ns = outcome.clock + int(self.settings.cooldown_s * NS)
        return closed
