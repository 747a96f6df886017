"""Part verdicts, alerts and camera status on the factory's MQTT bus (paho-mqtt 2.x).

Topics under the prefix `outputs.mqtt.topic` (default `linewatch/<line>`):

- `<prefix>/<camera>/verdict`  every part's verdict (OK too), QoS 1, not retained
- `<prefix>/<camera>/status`   camera state, parts/min, NG rate; QoS 1, retained
- `<prefix>/alerts`            alerts (NG parts, line alarms), QoS 1
- `<prefix>/publisher`         `online` while connected; the broker's last will sets
                               `offline` when the connection is lost; retained

Threads: the caller (the sink loop) only appends to a bounded queue and never waits on
the broker. paho's network thread (`loop_start`) talks to the broker and reconnects with
capped exponential backoff; a pump thread of ours hands queued messages to paho while
connected, at most `inflight_max` unacknowledged at a time, oldest first. Messages handed
to paho stay in paho until the broker's PUBACK and are sent again (DUP) after a
reconnect, so QoS 1 is at-least-once: within a process a duplicate can only follow a lost
connection with a message in flight (across a killed process, see the outbox's tokens:
confirmed_through / on_confirmed). Nothing new is handed over after a reconnect until
those resends are acknowledged, which keeps each topic in order. A full queue drops its
oldest message, counted in `linewatch_mqtt_messages_total{outcome="dropped"}`.

paho is never called while our lock is held: paho runs `on_publish` under its own lock,
so our callbacks only set flags and wake the pump.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linewatch.pipeline import metrics
from linewatch.pipeline.config import Settings
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.redact import redact_text, redact_url
from linewatch.schemas.messages import PartVerdict

log = logging.getLogger("linewatch.mqtt")

QOS = 1
PUMP_POLL_S = 0.2
RECENT_PARTS = 100_000  # (camera, part) keys remembered to refuse a second verdict
DROP_LOG_EVERY_S = 10.0


class JsonMessage(Protocol):
    def to_json(self) -> str: ...


@dataclass(frozen=True)
class MqttConfig:
    """Everything the publisher needs, parsed from `outputs.*` (see `from_settings`)."""

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    client_id: str = ""
    queue_max: int = 10_000
    inflight_max: int = 100
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    @property
    def safe_url(self) -> str:
        """The broker's address for logs and errors: never the password."""
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, topic: str, **options: Any) -> MqttConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"bad MQTT URL {redact_url(url)}: expected mqtt[s]://host[:port]")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError(f"bad MQTT URL {redact_url(url)}: the port is not a number") from None
        return cls(
            host=parts.hostname,
            port=port,
            topic=topic.rstrip("/"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            **options,
        )


@dataclass
class _Outgoing:
    topic: str
    payload: str
    kind: str  # verdict | alert | status | publisher
    key: str | None = None  # reported by take_delivered() once the broker acknowledged it
    retain: bool = False
    part: tuple[str, int] | None = None  # (camera, part_id) of a verdict
    token: int | None = None  # the caller's position, settled once acknowledged or dropped


@dataclass(eq=False)
class _InFlight:
    message: _Outgoing
    epoch: int  # connection epoch it was handed over in
    info: paho.MQTTMessageInfo | None = None


class MqttPublisher:
    """Publishes verdicts, alerts and camera status; every method but close() returns at once."""

    name = "mqtt"  # its outbox cursor's name

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._queue: deque[_Outgoing] = deque()
        self._status: dict[str, _Outgoing] = {}  # latest retained status per topic, to send
        self._last_status: dict[str, _Outgoing] = {}  # sent again after each reconnect
        self._inflight: list[_InFlight] = []
        self._delivered: list[str] = []
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._open_tokens: OrderedDict[int, None] = OrderedDict()  # given, not yet settled
        self._last_token: int | None = None
        self._confirmed_callback: Callable[[int], None] | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._epoch = 0  # bumped by paho's thread on each disconnect
        self._connected = False
        self._announce_online = False
        self._last_drop_log = 0.0
        self.state = "connecting"  # connecting | connected | disconnected | refused | closed
        self.last_error: str | None = None
        self._client = self._make_client()
        self._pump = threading.Thread(target=self._run_pump, name="mqtt-pump", daemon=True)
        self._pump.start()
        self._client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        self._client.loop_start()
        log.info("MQTT publisher for %s on %s/#", config.safe_url, config.topic)

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttPublisher | None:
        """The publisher `outputs.mqtt.url` asks for, or None when it is not set."""
        mqtt = settings.outputs.mqtt
        if not mqtt.url:
            return None
        config = MqttConfig.from_url(
            mqtt.url,
            settings.mqtt_topic,
            ca_file=mqtt.ca_file,
            client_id=mqtt.client_id or _default_client_id(settings.line),
            queue_max=mqtt.queue_max,
            inflight_max=mqtt.inflight_max,
            keepalive_s=mqtt.keepalive_s,
            reconnect_min_s=mqtt.reconnect_min_s,
            reconnect_max_s=mqtt.reconnect_max_s,
        )
        return cls(config)

    # ---- the caller's side: never blocks on the broker -------------------------------

    def verdict(self, verdict: PartVerdict, token: int | None = None) -> None:
        """Queue one part's verdict; a part already queued or sent is not sent again.

        `token` is the caller's increasing position (an outbox entry id): see
        confirmed_through(). A token not above the last one given is a replay: skipped.
        """
        part = (verdict.camera_id, verdict.part_id)
        with self._lock:
            if not self._take_token_locked(token):
                return
            if part in self._recent:
                metrics.MQTT_MESSAGES.labels("verdict", "duplicate").inc()
                self._settle_locked(token)
                return
            self._recent[part] = None
            if len(self._recent) > RECENT_PARTS:
                self._recent.popitem(last=False)
            topic = f"{self.config.topic}/{verdict.camera_id}/verdict"
            key = f"verdict:{verdict.camera_id}:{verdict.part_id}"
            message = _Outgoing(topic, verdict.to_json(), "verdict", key, part=part, token=token)
            self._enqueue_locked(message)
        self._wake.set()

    def alert(
        self,
        alert: JsonMessage | str | dict[str, Any],
        key: str | None = None,
        token: int | None = None,
    ) -> None:
        """Queue an alert (an object with to_json(), a JSON string or a dict) on `/alerts`."""
        payload = _json_payload(alert)
        alert_id = getattr(alert, "alert_id", None)
        if key is None and alert_id is not None:
            key = f"alert:{alert_id}:{getattr(alert, 'state', '')}"
        topic = f"{self.config.topic}/alerts"
        with self._lock:
            if self._take_token_locked(token):
                self._enqueue_locked(_Outgoing(topic, payload, "alert", key, token=token))
        self._wake.set()

    def notify(self, alert: JsonMessage, token: int | None = None) -> None:
        """The sink's notifier interface (notify + verdict): an alert on `/alerts`."""
        self.alert(alert, token=token)

    def confirmed_through(self) -> int | None:
        """The highest token such that it and every token before it are settled: sent and
        acknowledged by the broker, dropped from a full queue (counted) or skipped as a
        duplicate. An outbox moves this notifier's cursor there, so a sink killed with
        messages still queued gives them again after its restart. None before any token."""
        with self._lock:
            if self._open_tokens:
                return next(iter(self._open_tokens)) - 1
            return self._last_token

    def on_confirmed(self, callback: Callable[[int], None] | None) -> None:
        """Call `callback(confirmed_through())` from the pump thread as soon as the broker's
        acknowledgements move it, so an outbox can store its cursor at once."""
        self._confirmed_callback = callback

    def room(self) -> int:
        """Messages the queue takes before it drops its oldest (the outbox gives no more)."""
        with self._lock:
            return max(0, self.config.queue_max - len(self._queue))

    def camera_status(
        self, camera_id: str, state: str, parts_per_min: float, ng_rate: float | None
    ) -> None:
        """Set a camera's retained status; only the latest one waits while disconnected."""
        body = {
            "camera_id": camera_id,
            "state": state,
            "parts_per_min": round(parts_per_min, 3),
            "ng_rate": None if ng_rate is None else round(ng_rate, 5),
            "ts": time.time_ns(),
        }
        topic = f"{self.config.topic}/{camera_id}/status"
        message = _Outgoing(topic, json.dumps(body, sort_keys=True), "status", retain=True)
        with self._lock:
            self._status[topic] = message
            self._last_status[topic] = message
        self._wake.set()

    def take_delivered(self) -> list[str]:
        """Keys of verdicts (`verdict:<camera>:<part>`) and alerts the broker acknowledged."""
        with self._lock:
            delivered, self._delivered = self._delivered, []
        return delivered

    def pending(self) -> int:
        """Messages queued or in flight (not yet acknowledged by the broker)."""
        with self._lock:
            return len(self._queue) + len(self._status) + len(self._inflight)

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is acknowledged; False when the time ran out."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout_s`), mark the publisher offline, disconnect."""
        if self.state == "closed":
            return
        delivered = self.flush(timeout_s)
        if self._connected:
            info = publish_kept(self._client, self._publisher_topic, _presence("offline"), True)
            _wait_published(info, min(1.0, timeout_s))
        self._stopping.set()
        self._wake.set()
        self._pump.join(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        left = self.pending()
        self.state = "closed"
        metrics.MQTT_CONNECTED.set(0)
        if left or not delivered:
            log.warning("MQTT publisher closed with %d messages undelivered", left)

    # ---- paho's thread: flags only --------------------------------------------------

    def _make_client(self) -> paho.Client:
        config = self.config
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        client.suppress_exceptions = True
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            _set_tls(client, config)
        client.will_set(self._publisher_topic, _presence("offline", "connection lost"), QOS, True)
        client.max_inflight_messages_set(config.inflight_max)
        client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    @property
    def _publisher_topic(self) -> str:
        return f"{self.config.topic}/publisher"

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused(str(reason))
            return
        self._connected = True
        self._announce_online = True
        self.state = "connected"
        self.last_error = None
        metrics.MQTT_CONNECTED.set(1)
        log.info("MQTT connected to %s", self.config.safe_url)
        self._wake.set()

    def _refused(self, reason: str) -> None:
        metrics.MQTT_CONNECT_FAILURES.labels(reason[:40]).inc()
        if self.state != "refused" or self.last_error != reason:
            log.error(
                "MQTT broker %s refused the connection: %s (check outputs.mqtt.url's user and "
                "password); messages stay queued (at most %d) and the connection is retried",
                self.config.safe_url,
                reason,
                self.config.queue_max,
            )
        self.state = "refused"
        self.last_error = reason

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        metrics.MQTT_CONNECT_FAILURES.labels("unreachable").inc()
        if self.state not in ("disconnected", "refused"):
            log.warning("MQTT broker %s unreachable; retrying", self.config.safe_url)
        if self.state != "refused":
            self.state = "disconnected"
            self.last_error = "unreachable"

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._epoch += 1
        was_connected, self._connected = self._connected, False
        metrics.MQTT_CONNECTED.set(0)
        if was_connected and not self._stopping.is_set():
            log.warning("MQTT connection to %s lost (%s); retrying", self.config.safe_url, reason)
            self.state = "disconnected"
            self.last_error = redact_text(str(reason))
        self._wake.set()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        self._wake.set()

    # ---- the pump thread ------------------------------------------------------------

    def _run_pump(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(PUMP_POLL_S)
            self._wake.clear()
            try:
                self._reap()
                self._fill()
            except Exception:  # keep the pump alive; paho errors are retried next round
                log.exception("MQTT pump failed; retrying")
                time.sleep(PUMP_POLL_S)

    def _reap(self) -> None:
        with self._lock:
            done = [e for e in self._inflight if _published(e)]
            if not done:
                return
            self._inflight = [e for e in self._inflight if not _published(e)]
            for entry in done:
                metrics.MQTT_MESSAGES.labels(entry.message.kind, "published").inc()
                self._settle_locked(entry.message.token)
                if entry.message.key:
                    self._delivered.append(entry.message.key)
            self._set_queued_gauge_locked()
        callback = self._confirmed_callback
        confirmed = self.confirmed_through()
        if callback is not None and confirmed is not None:
            if any(e.message.token is not None for e in done):
                callback(confirmed)

    def _fill(self) -> None:
        while self._connected and not self._stopping.is_set():
            epoch = self._epoch
            with self._lock:
                message = self._next_locked(epoch)
                if message is None:
                    return
                entry = _InFlight(message, epoch)
                self._inflight.append(entry)
            try:
                entry.info = publish_kept(
                    self._client, message.topic, message.payload, message.retain
                )
            except ValueError as exc:  # a topic or payload no broker would take
                self._refuse(entry, str(exc))

    def _refuse(self, entry: _InFlight, reason: str) -> None:
        log.error("MQTT message on %s not sendable (%s): dropped", entry.message.topic, reason)
        metrics.MQTT_MESSAGES.labels(entry.message.kind, "invalid").inc()
        with self._lock:
            self._inflight.remove(entry)
            self._settle_locked(entry.message.token)
            if self._last_status.get(entry.message.topic) is entry.message:
                del self._last_status[entry.message.topic]  # not again after a reconnect

    def _next_locked(self, epoch: int) -> _Outgoing | None:
        if len(self._inflight) >= self.config.inflight_max:
            return None
        if any(e.epoch < epoch and not _published(e) for e in self._inflight):
            return None  # paho resends these first; keep the order
        if self._announce_online:
            self._announce_online = False
            self._status.update(self._last_status)  # a restarted broker may have lost them
            return _Outgoing(self._publisher_topic, _presence("online"), "publisher", retain=True)
        if self._status:
            return self._status.pop(next(iter(self._status)))
        return self._queue.popleft() if self._queue else None

    def _enqueue_locked(self, message: _Outgoing) -> None:
        if len(self._queue) >= self.config.queue_max:
            dropped = self._queue.popleft()
            metrics.MQTT_MESSAGES.labels(dropped.kind, "dropped").inc()
            self._forget_locked(dropped)
            self._settle_locked(dropped.token)
            self._log_drop_locked()
        self._queue.append(message)
        self._set_queued_gauge_locked()

    def _take_token_locked(self, token: int | None) -> bool:
        if token is None:
            return True
        if self._last_token is not None and token <= self._last_token:
            return False  # given before (an outbox replaying after an error)
        self._last_token = token
        self._open_tokens[token] = None
        return True

    def _settle_locked(self, token: int | None) -> None:
        if token is not None:
            self._open_tokens.pop(token, None)

    def _forget_locked(self, dropped: _Outgoing) -> None:
        """A dropped verdict may be offered again (e.g. by the sink's outbox)."""
        if dropped.part is not None:
            self._recent.pop(dropped.part, None)

    def _log_drop_locked(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_EVERY_S:
            self._last_drop_log = now
            log.warning(
                "MQTT queue full (%d messages, broker %s %s): dropping the oldest",
                self.config.queue_max,
                self.config.safe_url,
                self.state,
            )

    def _set_queued_gauge_locked(self) -> None:
        metrics.MQTT_QUEUED.set(len(self._queue) + len(self._inflight))


def publish_kept(
    client: paho.Client, topic: str, payload: str | bytes, retain: bool
) -> paho.MQTTMessageInfo:
    """`client.publish` at QoS 1. A publish that races a lost connection returns
    MQTT_ERR_NO_CONN, yet paho keeps the message and sends it after the reconnect; its
    rc is cleared so that `is_published` waits for the broker's acknowledgement instead
    of raising on that rc for ever (which stalled the pump)."""
    info = client.publish(topic, payload, QOS, retain)
    if info.rc == paho.MQTT_ERR_NO_CONN:
        info.rc = paho.MQTT_ERR_SUCCESS
    return info


def _published(entry: _InFlight) -> bool:
    return entry.info is not None and entry.info.is_published()


def _wait_published(info: paho.MQTTMessageInfo, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not info.is_published() and time.monotonic() < deadline:
        time.sleep(0.01)


def _presence(state: str, reason: str | None = None) -> str:
    body: dict[str, Any] = {"state": state, "ts": time.time_ns()}
    if reason:
        body["reason"] = reason
    return json.dumps(body, sort_keys=True)


def _json_payload(message: JsonMessage | str | dict[str, Any]) -> str:
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        return json.dumps(message, sort_keys=True)
    return message.to_json()


def _set_tls(client: paho.Client, config: MqttConfig) -> None:
    ca_file = str(config.ca_file) if config.ca_file else None
    try:
        client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"outputs.mqtt.ca_file {ca_file}: cannot load it ({exc})") from None


def _default_client_id(line: str) -> str:
    return f"linewatch-{line}-{socket.gethostname()[:20]}-{os.getpid()}"[:64]


def probe_broker(config: MqttConfig, timeout_s: float) -> None:
    """Connect once with a client of its own (no will, nothing published) and disconnect;
    ConnectionError says why the broker did not accept it."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{config.client_id or 'linewatch'}-check"
    )
    if config.username:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        _set_tls(client, config)
    try:
        client.connect(config.host, config.port, keepalive=10)
    except OSError as exc:
        raise ConnectionError(
            f"MQTT broker {config.safe_url} unreachable ({exc.strerror or exc}); start it or "
            "fix outputs.mqtt.url"
        ) from None
    outcome: list[str] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: outcome.append(str(reason))
    deadline = time.monotonic() + timeout_s
    while not outcome and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    if not outcome:
        raise ConnectionError(f"MQTT broker {config.safe_url} did not answer in {timeout_s:g} s")
    if outcome[0] != "Success":
        raise ConnectionError(
            f"MQTT broker {config.safe_url} refused the connection: {outcome[0]} (check "
            "outputs.mqtt.url's user and password)"
        )
