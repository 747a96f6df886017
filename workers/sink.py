"""Results sink: write results to SQL, run the alert rule, acknowledge after the commit."""

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
from linewatch.pipeline.alerts.camera_status import CameraStatus
from linewatch.pipeline.alerts.mqtt import MqttPublisher
from linewatch.pipeline.alerts.notifiers import (
    LogNotifier,
    Notifier,
    PubSubNotifier,
    WebhookNotifier,
)
from linewatch.pipeline.alerts.outbox import Outbox
from linewatch.pipeline.alerts.parts import DEADLINE, LATE, PartJudge, Round
from linewatch.pipeline.alerts.reorder import ReorderBuffer
from linewatch.pipeline.alerts.rule import AlertEngine, DefectEvent, FrameOutcome
from linewatch.pipeline.alerts.verdict import ModelCatalog, model_labels
from linewatch.pipeline.alerts.webhook import Webhook
from linewatch.pipeline.config import Settings
from linewatch.pipeline.inference.switching import requested_model_dir
from linewatch.pipeline.retry import Interrupted, retry
from linewatch.pipeline.runtime import StopFlag, run_worker
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.consumer import ConsumerLoop, decode_entries
from linewatch.pipeline.streams.lease import Lease
from linewatch.schemas.messages import (
    AlertMessage,
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


def rule_clock(result: ResultMessage) -> int | None:
    """Live cameras run the alert rule on capture time; a file on its video time (pts),
    since it is decoded far faster than it plays and a cooldown means seconds of video."""
    if result.live or result.pts < 0:
        return None
    return int(result.pts * 1e9)


class ResultBatchHandler:
    """Writes one batch of result entries and the defect events they cause."""

    def __init__(
        self,
        client: broker.Client,
        engine: Engine,
        alerts: AlertEngine,
        notifiers: list[Notifier],
        settings: Settings,
        judge: PartJudge | None = None,
        outbox: Outbox | None = None,
        camera_status: CameraStatus | None = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.alerts = alerts
        self.notifiers = notifiers
        self.settings = settings
        self.judge = judge  # decides parts (parts mode); None: frames only
        self.outbox = outbox  # announces what the judge decided, after its commit
        self.camera_status = camera_status  # each camera's retained MQTT status
        self.counters = SinkCounters()
        self.reorder = ReorderBuffer()
        self._evidence: dict[tuple[str, int], bytes] = {}

    def handle(self, entries: list[broker.Entry], stop: StopFlag) -> bool:
        """True when written and acknowledged; False when stopped while the DB was down."""
        pipe = broker.transaction(self.client)
        results, part_ends = self._decode(entries, pipe)
        events = self._events(results)
        stored = self._write(results, events, stop, part_ends)
        if stored is None:
            return False
        broker.ack_and_delete(pipe, self.settings.results_stream, GROUP, [e[0] for e in entries])
        # Rows stored for the entries acknowledged here, replays included: a sink killed
        # between its commit and this MULTI left them unacknowledged and uncounted, so
        # counting only new rows would lose them from the line's total for good.
        rows = sum(not result.shadow for result in results)
        broker.add_counts(pipe, self.settings.stats_key, {"written": rows})
        pipe.execute()
        self._observe(results, stored)
        for item in stored:
            if item.is_new:
                self.counters.alerts += item.event.state == "open"
                self._announce(item)
        return self.decide_parts(stop)

    def decide_parts(self, stop: StopFlag) -> bool:
        """Decide the parts that are due (after every batch and when idle), then announce
        them; False when stopped while the database was down."""
        if self.judge is None or self.outbox is None:
            return True
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

    def _observe(self, results: list[ResultMessage], stored: list[storage.StoredEvent]) -> None:
        now = time.time_ns()
        live = [result for result in results if not result.shadow]
        metrics.FRAMES.labels("sink", "written").inc(len(live))
        for result in live:
            metrics.CAPTURE_TO_RESULT.observe((now - result.capture_ts) / 1e9)
        for item in stored:
            if item.is_new and item.event.state == "open":
                metrics.ALERTS.labels(item.event.camera_id).inc()
                metrics.CAPTURE_TO_ALERT.observe((now - item.event.opened_ts) / 1e9)

    def _decode(
        self, entries: list[broker.Entry], pipe: object
    ) -> tuple[list[ResultMessage], list[PartEndMessage]]:
        """Results (frames and part views) in seq order per camera, and part ends."""
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

    def _events(self, results: list[ResultMessage]) -> list[tuple[DefectEvent, bytes]]:
        """Frames go through the reorder buffer, then the rule; events carry evidence."""
        released = []
        for result in results:
            if result.status != "ok" or result.shadow:  # a shadow model never alerts
                continue
            if result.view is not None:  # a part's view: its part is decided as a whole
                continue
            if result.is_defect and result.evidence:
                self._evidence[(result.camera_id, result.seq)] = result.evidence
            outcome = FrameOutcome(
                result.camera_id,
                result.seq,
                result.capture_ts,
                result.label,
                result.score,
                result.is_defect,
                clock_ns=rule_clock(result),
            )
            released += self.reorder.push(outcome)
        return self._apply_rule(released)

    def _apply_rule(self, outcomes: list[FrameOutcome]) -> list[tuple[DefectEvent, bytes]]:
        events = []
        for outcome in outcomes:
            evidence = self._evidence.pop((outcome.camera_id, outcome.seq), b"")
            for event in self.alerts.feed(outcome):
                events.append((event, evidence if event.state == "open" else b""))
        return events

    def flush_due(self, stop: StopFlag, everything: bool = False) -> None:
        """When idle (or stopping: everything): run the rule on frames whose reorder wait
        is over, and store the events."""
        events = self._apply_rule(self.reorder.drain() if everything else self.reorder.due())
        stored = self._write([], events, stop) if events else None
        for item in stored or []:
            if item.is_new:
                self.counters.alerts += item.event.state == "open"
                self._announce(item)
        self.decide_parts(stop)

    def _write(
        self,
        results: list[ResultMessage],
        events: list[tuple[DefectEvent, bytes]],
        stop: StopFlag,
        part_ends: list[PartEndMessage] | None = None,
    ) -> list[storage.StoredEvent] | None:
        """Store results + events + part ends; a database outage is waited out (None:
        stopped meanwhile)."""
        deadline_ns = self.settings.verdict.deadline_ms * 1_000_000
        written = self._with_retry(
            lambda: storage.write_batch(
                self.engine, results, events, time.time_ns(), part_ends or (), deadline_ns
            ),
            stop,
        )
        if written is None:
            return None
        inserted, stored = written
        self.counters.written += inserted
        self.counters.replayed += sum(not result.shadow for result in results) - inserted
        return stored

    def _with_retry(self, call: Callable[[], T], stop: StopFlag) -> T | None:
        """`call()` retried while the database is down; None when stopped meanwhile."""
        try:
            return retry(call, storage.DatabaseError, stop.wait, note_database_retry)
        except Interrupted:
            return None

    def _announce(self, item: storage.StoredEvent) -> None:
        event = item.event
        message = AlertMessage(
            item.alert_id,
            event.camera_id,
            event.label,
            event.state,
            event.opened_seq,
            event.opened_ts,
            event.closed_seq,
            event.closed_ts,
            event.peak_score,
            event.frames,
        )
        self._each_notifier("notify", message, f"alert {item.alert_id}")

    def _each_notifier(self, method: str, message: object, what: str) -> None:
        for notifier in self.notifiers:
            try:
                getattr(notifier, method)(message)
            except Exception:  # one failing notifier must not stop the others or the sink
                log.exception("notifier %s failed for %s", type(notifier).__name__, what)


def note_database_retry(exc: BaseException, delay: float) -> None:
    log.error(
        "database write failed (%s); results stay unacknowledged, retrying in %.1f s",
        exc.__class__.__name__,
        delay,
    )


def observe_parts(done: Round) -> None:
    """Parts decided, uninspected at the deadline, late; capture to verdict."""
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


def part_judge(engine: Engine, settings: Settings, client: broker.Client) -> PartJudge:
    """Decides parts with the labels and threshold of the model that inferred their views."""
    models = ModelCatalog(
        model_labels(settings.inference.model_dir),
        requested=lambda: requested_model_dir(client, settings),
    )
    return PartJudge(
        engine=engine,
        models=models,
        verdict=settings.verdict,
        line=settings.alerts.line,
    )


def run(
    client: broker.Client, engine: Engine, settings: Settings, consumer: str, stop: StopFlag
) -> SinkCounters:
    """Consume the results stream until stopped."""
    alerts = AlertEngine(settings.alerts)
    alerts.resume(storage.open_events(engine))
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
        alerts,
        notifiers,
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
    pubsub = PubSubNotifier(
        client, settings.alerts.channel, settings.alerts.verdict_channel, line=settings.line
    )
    notifiers: list[Notifier] = [LogNotifier(), pubsub]
    if settings.alerts.webhook_url:
        secret = settings.alerts.webhook_secret
        webhook = Webhook(
            settings.alerts.webhook_url,
            secret.get_secret_value() if secret else None,
            settings.alerts.webhook_timeout_s,
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
        idle=partial(handler.flush_due, stop),
    ).run(stop)
    handler.flush_due(stop, everything=True)  # one try: the database may be the reason we stop
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
        redis_url = settings.require_redis_url("sink worker")
        engine = storage.open_database(settings.resolved_database_url())
        client = broker.connect(redis_url, attempts=20)
        run_while_active(
            client, settings, consumer, stop, lambda: run(client, engine, settings, consumer, stop)
        )

    run_worker(consumer, debug, body, metrics_port)
