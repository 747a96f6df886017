"""Announce defect events: to the log, on a Redis pub/sub channel, and to a webhook
(one RQ delivery job per alert state change; rq is imported only when one is sent)."""

from __future__ import annotations

import json
import logging
from typing import Protocol

from linewatch.pipeline.alerts.webhook import Webhook
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import AlertMessage

log = logging.getLogger("linewatch.alerts")


class Notifier(Protocol):
    def notify(self, alert: AlertMessage) -> None: ...


class LogNotifier:
    def notify(self, alert: AlertMessage) -> None:
        if alert.state == "open":
            log.warning(
                "DEFECT %s on %s opened at seq %d (score %.2f)",
                alert.label,
                alert.camera_id,
                alert.opened_seq,
                alert.peak_score,
            )
        else:
            log.warning(
                "DEFECT %s on %s closed at seq %s after %d defective frames",
                alert.label,
                alert.camera_id,
                alert.closed_seq,
                alert.frames,
            )


class PubSubNotifier:
    def __init__(self, client: broker.Client, channel: str) -> None:
        self.client = client
        self.channel = channel

    def notify(self, alert: AlertMessage) -> None:
        broker.publish(self.client, self.channel, alert.to_json())


class WebhookNotifier:
    """Enqueues one RQ delivery job per alert state change (retried with backoff)."""

    def __init__(self, client: broker.Client, webhook: Webhook) -> None:
        self.client = client
        self.webhook = webhook

    def notify(self, alert: AlertMessage) -> None:
        from linewatch.pipeline import jobs  # rq: only on a line that sends webhooks

        payload = json.loads(alert.to_json())
        jobs.enqueue_webhook(self.client, alert.alert_id, alert.state, payload, self.webhook)
