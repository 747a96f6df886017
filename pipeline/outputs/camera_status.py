"""Each camera's retained status on the MQTT bus (`<prefix>/<camera>/status`), sent every
`outputs.mqtt.status_every_s`: its ingest state (connecting | streaming | stalled |
backoff | stopped; `unknown` before its ingest reported), parts per minute and NG rate
over the last minute (pipeline/storage/part_activity.py). A status that cannot be read
(Redis or the database down) is skipped until the next period: it never holds the sink.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from sqlalchemy import Engine

from linewatch.pipeline import keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.decide.ng_rule import ng_sql
from linewatch.pipeline.storage import part_activity
from linewatch.pipeline.storage.database import DatabaseError
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)


class StatusPublisher(Protocol):
    def camera_status(
        self, camera_id: str, state: str, parts_per_min: float, ng_rate: float | None
    ) -> None: ...


class CameraStatus:
    def __init__(
        self,
        *,
        client: broker.Client,
        engine: Engine,
        settings: Settings,
        publisher: StatusPublisher,
    ) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings
        self.publisher = publisher
        self._next = 0.0  # monotonic time of the next status (the first one at once)

    def publish_due(self) -> None:
        """Publish every camera's status if the period is over (else return at once)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.settings.outputs.mqtt.status_every_s
        try:
            self._publish()
        except (DatabaseError, broker.RedisError) as exc:
            log.warning(
                "camera status not published (%s); next try in %.0f s",
                exc.__class__.__name__,
                self.settings.outputs.mqtt.status_every_s,
            )

    def _publish(self) -> None:
        ng = ng_sql(self.settings.verdict.rejects_uninspected)
        recent = part_activity.recent(self.engine, ng)
        for camera in self.settings.cameras:
            state = self.client.hget(self.settings.camera_key(camera.id, keys.INGEST), "state")
            activity = recent.get(camera.id, part_activity.Activity(0, 0))
            self.publisher.camera_status(
                camera.id,
                state.decode() if state else "unknown",
                parts_per_min=activity.parts * 60 / part_activity.WINDOW_S,
                ng_rate=activity.ng_rate,
            )
