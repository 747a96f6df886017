"""The line alarm (alert kind `line`): one per camera, over its parts (frame mode: its
frames, each a one-view part).

It opens when the NG rate over the camera's last `n` parts reaches `open_rate` (taken
once `n` parts are in the window) or when `run` NG parts follow one another, and closes
when the rate over the last `n` parts falls to `close_rate` or below (hysteresis: a rate
between the two keeps it as it is). Parts are fed in part order per camera (the judge
holds a part decided before an earlier one, as parallel inference workers finish out of
order); a restarted sink rebuilds the window from the stored parts and resumes an open
alarm.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from linewatch.pipeline.config import LineAlarmSettings
from linewatch.schemas.decisions import LineEvent, PartOutcome


@dataclass
class _Camera:
    window: deque[bool]
    run: int = 0
    event: LineEvent | None = None


class LineAlarm:
    def __init__(self, settings: LineAlarmSettings) -> None:
        self.settings = settings
        self._cameras: dict[str, _Camera] = {}

    def resume(self, recent: Iterable[PartOutcome], open_events: Iterable[LineEvent]) -> None:
        """Rebuild the windows from the stored parts (oldest first) and the open alarms."""
        for outcome in recent:
            camera = self._camera(outcome.camera_id)
            camera.window.append(outcome.ng)
            camera.run = camera.run + 1 if outcome.ng else 0
        for event in open_events:
            self._camera(event.camera_id).event = event

    def feed(self, outcome: PartOutcome) -> LineEvent | None:
        """Apply one newly decided part (never a replay: the caller feeds a part once, when
        its row is new); the event that opened or closed, if any."""
        camera = self._camera(outcome.camera_id)
        camera.window.append(outcome.ng)
        camera.run = camera.run + 1 if outcome.ng else 0
        if camera.event is None:
            return self._maybe_open(camera, outcome)
        return self._maybe_close(camera, outcome)

    def _camera(self, camera_id: str) -> _Camera:
        if camera_id not in self._cameras:
            self._cameras[camera_id] = _Camera(window=deque(maxlen=self.settings.n))
        return self._cameras[camera_id]

    def _rate(self, camera: _Camera) -> float:
        return sum(camera.window) / len(camera.window) if camera.window else 0.0

    def _maybe_open(self, camera: _Camera, outcome: PartOutcome) -> LineEvent | None:
        full = len(camera.window) >= self.settings.n
        by_rate = full and self._rate(camera) >= self.settings.open_rate
        by_run = self.settings.run > 0 and camera.run >= self.settings.run
        if not (by_rate or by_run):
            return None
        camera.event = LineEvent(
            camera_id=outcome.camera_id,
            state="open",
            opened_seq=outcome.first_seq,
            opened_ts=outcome.capture_ts,
            rate=self._rate(camera),
            ng_parts=sum(camera.window),
        )
        return camera.event

    def _maybe_close(self, camera: _Camera, outcome: PartOutcome) -> LineEvent | None:
        event = camera.event
        assert event is not None
        rate = self._rate(camera)
        event = replace(event, rate=max(event.rate, rate), ng_parts=event.ng_parts + outcome.ng)
        camera.event = event
        if camera.run or rate > self.settings.close_rate:
            return None
        camera.event = None
        return replace(
            event, state="closed", closed_seq=outcome.last_seq, closed_ts=outcome.capture_ts
        )
