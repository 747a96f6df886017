"""Announce alerts and part verdicts: to the log, on Redis pub/sub, to a webhook (one RQ
delivery job per alert state change; rq is imported only when one is sent).

A notifier has two methods, both called by the sink after the SQL commit that made
what they announce: `notify(AlertMessage)` for each alert (frame events, NG parts, line
alarms) and `verdict(PartVerdict)` for every decided part, OK parts too, exactly once
per part (a late verdict is not sent again). An MQTT publisher is one more notifier, an
acknowledging one (AckNotifier): the outbox moves its cursor only as far as the broker
confirmed (pipeline/outputs/outbox.py).

Pub/sub and the webhook queue take each announcement once even when a restarted sink
gives it again: pub/sub sets a marker with the PUBLISH (one Redis script), the webhook
job has the alert state's id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from linewatch.pipeline import keys
from linewatch.pipeline.outputs.webhook import Webhook
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import AlertMessage, PartVerdict

log = logging.getLogger("linewatch.alerts")


class Notifier(Protocol):
    def notify(self, alert: AlertMessage) -> None: ...

    def verdict(self, verdict: PartVerdict) -> None: ...


@runtime_checkable
class AckNotifier(Protocol):
    """A notifier whose deliveries are confirmed later (MQTT PUBACK): given each outbox
    entry's id as `token`, it says through which token everything is settled."""

    def notify(self, alert: AlertMessage, token: int | None = None) -> None: ...

    def verdict(self, verdict: PartVerdict, token: int | None = None) -> None: ...

    def confirmed_through(self) -> int | None: ...

    def on_confirmed(self, callback: Callable[[int], None] | None) -> None: ...

    def room(self) -> int: ...


ANNOUNCED_TTL_S = 3600  # a marker outlives any sink restart that could give its entry again


class LogNotifier:
    def notify(self, alert: AlertMessage) -> None:
        if alert.kind == "part":
            log.warning(
                "NG part %s on %s: %s (score %.2f)",
                alert.part_id,
                alert.camera_id,
                alert.label,
                alert.peak_score,
            )
        elif alert.kind == "line":
            log.warning(
                "LINE ALARM on %s %s: NG rate %.0f %% (%d NG parts)",
                alert.camera_id,
                "opened" if alert.state == "open" else "closed",
                alert.peak_score * 100,
                alert.frames,
            )
        elif alert.state == "open":
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

    def verdict(self, verdict: PartVerdict) -> None:
        log.info(
            "part %d on %s: %s %s (score %.2f, %d/%d views)",
            verdict.part_id,
            verdict.camera_id,
            verdict.verdict,
            verdict.label,
            verdict.score,
            verdict.views_inferred,
            verdict.views_sent,
        )


class PubSubNotifier:
    """Alerts on `channel`; every part's verdict on `verdict_channel` (when given); each
    once per line (`line`: marked in Redis for ANNOUNCED_TTL_S)."""

    def __init__(
        self,
        client: broker.Client,
        channel: str,
        verdict_channel: str | None = None,
        *,
        line: str,
    ) -> None:
        self.client = client
        self.channel = channel
        self.verdict_channel = verdict_channel
        self.line = line

    def notify(self, alert: AlertMessage) -> None:
        what = f"alert:{alert.alert_id}:{alert.state}"
        self._publish(self.channel, alert.to_json(), what)

    def verdict(self, verdict: PartVerdict) -> None:
        if self.verdict_channel:
            what = f"verdict:{verdict.camera_id}:{verdict.part_id}"
            self._publish(self.verdict_channel, verdict.to_json(), what)

    def _publish(self, channel: str, message: str, what: str) -> None:
        marker = keys.announced(self.line, what)
        broker.publish_once(self.client, channel, message, marker, ANNOUNCED_TTL_S)


class WebhookNotifier:
    """Enqueues one RQ delivery job per alert state change (retried with backoff)."""

    def __init__(self, client: broker.Client, webhook: Webhook) -> None:
        self.client = client
        self.webhook = webhook

    def notify(self, alert: AlertMessage) -> None:
        from linewatch.pipeline import jobs  # rq: only on a line that sends webhooks

        payload = json.loads(alert.to_json())
        jobs.enqueue_webhook(self.client, alert.alert_id, alert.state, payload, self.webhook)

    def verdict(self, verdict: PartVerdict) -> None:
        """Webhooks get alerts (NG parts among them), not every part's verdict."""
