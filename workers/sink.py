"""Results sink: store the views' results and part ends, acknowledge after the commit,
then judge the parts that are due and deliver what the judge decided through the outbox.

One decision path for every camera (frame mode is a one-view part): results → SQL →
judge (verdict, part alert, line alarm) → outbox → notifiers."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from sqlalchemy import Engine

from linewatch.pipeline import metrics
from linewatch.pipeline.config import Settings
from linewatch.pipeline.decide.judge import DEADLINE, LATE, PartJudge, Round
from linewatch.pipeline.decide.verdict import ModelCatalog, model_labels
from linewatch.pipeline.inference.switching import running_model_dir
from linewatch.pipeline.outputs.camera_status import CameraStatus
from linewatch.pipeline.outputs.mqtt import MqttPublisher
from linewatch.pipeline.outputs.notifiers import (
    LogNotifier,
    Notifier,
    PubSubNotifier,
    WebhookNotifier,
)
from linewatch.pipeline.outputs.outbox import Outbox
from linewatch.pipeline.outputs.webhook import Webhook
from linewatch.pipeline.retry import Interrupted, retry
from linewatch.pipeline.runtime import StopFlag, run_worker
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.consumer import ConsumerLoop, decode_entries
from linewatch.pipeline.streams.lease import Lease
from linewatch.schemas.messages import (
    PartEndMessage,
    ResultMessage,
    decode_result_entry,
)

log = logging.getLogger(__name__)

GROUP = "sink"
T = TypeVar("T")


@dataclass
class SinkCounters:
    written: int = 0
    replayed: int = 0
    alerts: int = 0
    dead_letters: int = 0
    parts: int = 0  # parts decided and announced


class ResultBatchHandler:
    """Writes one batch of result entries and part ends, then judges the parts due."""

    def __init__(
        self,
        client: broker.Client,
        engine: Engine,
        settings: Settings,
        judge: PartJudge,
        outbox: Outbox,
        camera_status: CameraStatus | None = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings
        self.judge = judge  # decides the parts
        self.outbox = outbox  # announces what the judge decided, after its commit
        self.camera_status = camera_status  # each camera's retained MQTT status
        self.counters = SinkCounters()

    def handle(self, entries: list[broker.Entry], stop: StopFlag) -> bool:
        """True when written and acknowledged; False when stopped while the DB was down."""
        pipe = broker.transaction(self.client)
        results, part_ends = self._decode(entries, pipe)
        if not self._write(results, part_ends, stop):
            return False
        broker.ack_and_delete(pipe, self.settings.results_stream, GROUP, [e[0] for e in entries])
        # Rows stored for the entries acknowledged here, replays included: a sink killed
        # between its commit and this MULTI left them unacknowledged and uncounted, so
        # counting only new rows would lose them from the line's total for good.
        rows = sum(not result.shadow for result in results)
        broker.add_counts(pipe, self.settings.stats_key, {"written": rows})
        pipe.execute()
        self._observe(results)
        return self.decide_parts(stop)

    def decide_parts(self, stop: StopFlag) -> bool:
        """Decide the parts that are due (after every batch and when idle), then announce
        them; False when stopped while the database was down."""
        judge, outbox = self.judge, self.outbox
        done = self._with_retry(lambda: judge.decide_due(time.time_ns()), stop)
        if done is None:
            return False
        observe_parts(done)
        self.counters.parts += len(done.verdicts)
        self.counters.alerts += len(done.alerts)
        delivered = self._with_retry(outbox.deliver, stop) is not None
        if self.camera_status is not None:
            self.camera_status.publish_due()
        return delivered

    def status(self) -> dict[str, str | int]:
        """This sink's heartbeat fields (`linewatch status`)."""
        return {"role": "sink", "written": self.counters.written, "parts": self.counters.parts}

    def _observe(self, results: list[ResultMessage]) -> None:
        now = time.time_ns()
        live = [result for result in results if not result.shadow]
        metrics.FRAMES.labels("sink", "written").inc(len(live))
        for result in live:
            metrics.CAPTURE_TO_RESULT.observe((now - result.capture_ts) / 1e9)

    def _decode(
        self, entries: list[broker.Entry], pipe: object
    ) -> tuple[list[ResultMessage], list[PartEndMessage]]:
        """Results (part views) in seq order per camera, and part ends."""
        messages = decode_entries(
            entries,
            decode_result_entry,
            pipe,
            self.settings.results_stream,
            self.settings.dead_letter_stream,
        )
        self.counters.dead_letters += len(entries) - len(messages)
        results = [m for m in messages if isinstance(m, ResultMessage)]
        part_ends = [m for m in messages if isinstance(m, PartEndMessage)]
        return sorted(results, key=lambda r: (r.camera_id, r.seq)), part_ends

    def _write(
        self, results: list[ResultMessage], part_ends: list[PartEndMessage], stop: StopFlag
    ) -> bool:
        """Store results + part ends; a database outage is waited out (False: stopped
        meanwhile)."""
        deadline_ns = self.settings.verdict.deadline_ms * 1_000_000
        inserted = self._with_retry(
            lambda: storage.write_batch(
                self.engine, results, time.time_ns(), part_ends, deadline_ns
            ),
            stop,
        )
        if inserted is None:
            return False
        self.counters.written += inserted
        self.counters.replayed += sum(not result.shadow for result in results) - inserted
        return True

    def _with_retry(self, call: Callable[[], T], stop: StopFlag) -> T | None:
        """`call()` retried while the database is down; None when stopped meanwhile."""
        try:
            return retry(call, storage.DatabaseError, stop.wait, note_database_retry)
        except Interrupted:
            return None


def note_database_retry(exc: BaseException, delay: float) -> None:
    log.error(
        "database write failed (%s); results stay unacknowledged, retrying in %.1f s",
        exc.__class__.__name__,
        delay,
    )


def observe_parts(done: Round) -> None:
    """Parts decided, uninspected at the deadline, late; capture to verdict; alerts."""
    now = time.time_ns()
    for item in done.decided:
        camera, announce = item.pending.end.camera_id, item.announce
        if item.action == DEADLINE:
            metrics.PARTS_AT_DEADLINE.labels(camera).inc()
        if item.action == LATE or (announce and announce.decided_ts > announce.deadline_ts):
            metrics.PARTS_LATE.labels(camera).inc()
        if announce is not None:
            metrics.PARTS.labels(camera, announce.verdict).inc()
            seconds = (now - item.pending.end.last_capture_ts) / 1e9
            metrics.CAPTURE_TO_VERDICT.observe(seconds)
    for alert in done.alerts:
        if alert.state in ("raised", "open"):
            metrics.ALERTS.labels(alert.camera_id).inc()
            metrics.CAPTURE_TO_ALERT.observe((now - alert.opened_ts) / 1e9)


def part_judge(engine: Engine, settings: Settings, client: broker.Client) -> PartJudge:
    """Decides parts with the labels and threshold of the model that inferred their views."""
    models = ModelCatalog(
        model_labels(settings.inference.model_dir),
        running=lambda: running_model_dir(client, settings),
    )
    return PartJudge(
        engine=engine,
        models=models,
        verdict=settings.verdict,
        line=settings.verdict.line_alarm,
    )


def run(
    client: broker.Client, engine: Engine, settings: Settings, consumer: str, stop: StopFlag
) -> SinkCounters:
    """Consume the results stream until stopped."""
    mqtt = MqttPublisher.from_settings(settings)
    notifiers = make_notifiers(client, settings, mqtt)
    outbox = Outbox(engine=engine, notifiers=notifiers)
    outbox.open()
    status = None
    if mqtt is not None:
        status = CameraStatus(client=client, engine=engine, settings=settings, publisher=mqtt)
    handler = ResultBatchHandler(
        client,
        engine,
        settings,
        judge=part_judge(engine, settings, client),
        outbox=outbox,
        camera_status=status,
    )
    try:
        outbox.deliver()  # what a killed sink committed and had not announced yet
        return _consume(
            client=client, settings=settings, consumer=consumer, stop=stop, handler=handler
        )
    finally:
        if mqtt is not None:
            mqtt.close(timeout_s=5)  # sends what is queued, marks the publisher offline
            with contextlib.suppress(storage.DatabaseError):
                outbox.settle()  # what the broker confirmed meanwhile is not sent again


def make_notifiers(
    client: broker.Client, settings: Settings, mqtt: MqttPublisher | None
) -> list[Notifier]:
    """Log, pub/sub, the webhook queue (when configured) and MQTT (when configured)."""
    channels = settings.outputs.pubsub
    pubsub = PubSubNotifier(
        client, channels.alerts_channel, channels.verdicts_channel, line=settings.line
    )
    notifiers: list[Notifier] = [LogNotifier(), pubsub]
    hook = settings.outputs.webhook
    if hook.url:
        webhook = Webhook(
            hook.url,
            hook.secret.get_secret_value() if hook.secret else None,
            hook.timeout_s,
        )
        notifiers.append(WebhookNotifier(client, webhook))
    if mqtt is not None:
        notifiers.append(mqtt)
    return notifiers


def _consume(
    *,
    client: broker.Client,
    settings: Settings,
    consumer: str,
    stop: StopFlag,
    handler: ResultBatchHandler,
) -> SinkCounters:
    stream = settings.results_stream
    size = settings.sink.batch_size
    ConsumerLoop(
        client=client,
        stream=stream,
        group=GROUP,
        consumer=consumer,
        count=size,
        read_new=partial(
            broker.read_group, client, stream, GROUP, consumer, size, settings.sink.block_ms
        ),
        handle=partial(handler.handle, stop=stop),
        heartbeat_key=settings.worker_key(consumer),
        status=handler.status,
        idle=partial(handler.decide_parts, stop),
    ).run(stop)
    handler.decide_parts(stop)  # one try: the database may be the reason we stop
    c = handler.counters
    log.info(
        "sink %s: written %d, replays skipped %d, parts %d, alerts %d, dead letters %d",
        consumer,
        c.written,
        c.replayed,
        c.parts,
        c.alerts,
        c.dead_letters,
    )
    return handler.counters


def run_while_active(
    client: broker.Client,
    settings: Settings,
    consumer: str,
    stop: StopFlag,
    work: Callable[[], object],
) -> None:
    """`work()` once this sink holds the line's lease (a standby until then), renewing it
    meanwhile; a lease lost to another sink stops the work and exits 1 (restarted by the
    supervisor, as a standby)."""
    lease = Lease(
        client, key=settings.sink_lease_key, owner=consumer, ttl_s=settings.sink.lease_ttl_s
    )
    if not lease.wait(stop.wait, poll_s=min(1.0, settings.sink.lease_ttl_s / 3)):
        return
    lost = threading.Event()

    def on_lost() -> None:
        lost.set()
        stop.set()

    renewing = lease.keep(on_lost=on_lost)
    try:
        work()
    finally:
        renewing.set()
        with contextlib.suppress(broker.RedisError):
            lease.release()  # a standby need not wait for the TTL
    if lost.is_set():
        raise SystemExit(1)


def main(
    settings: Settings, consumer: str | None = None, debug: bool = False, metrics_port: int = 0
) -> None:
    """Process entry point (spawned by `linewatch run` or called by `linewatch worker sink`)."""
    consumer = consumer or f"sink-{socket.gethostname()}"

    def body(stop: StopFlag) -> None:
        client = broker.connect_to(settings, "sink worker", attempts=20)
        engine = storage.open_database(settings.resolved_database_url())
        run_while_active(
            client, settings, consumer, stop, lambda: run(client, engine, settings, consumer, stop)
        )

    run_worker(consumer, debug, body, metrics_port)
