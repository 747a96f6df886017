"""MQTT publisher against a real Mosquitto broker: order, exactly-once, outages, auth, TLS."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import generate_latest

from linewatch.pipeline import metrics
from linewatch.pipeline.config import load_settings
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.outputs.mqtt import MqttConfig, MqttPublisher, publish_kept
from linewatch.schemas.messages import AlertMessage, PartVerdict
from tests.support.mosquitto import BROKER_INFLIGHT, MOSQUITTO, Mosquitto, Subscriber, make_tls

TOPIC = "lw/test"
PASSWORD = "s3cret-Pa55"
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.3}


def _require_mosquitto() -> None:
    if Path(MOSQUITTO).exists():
        return
    message = "mosquitto missing: apt-get install $(cat .ci/apt-packages.txt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    _require_mosquitto()
    with Mosquitto(tmp_path / "broker") as server:
        yield server


@pytest.fixture()
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker, TOPIC)
    yield sub
    sub.close()


def verdict(camera: str, part_id: int, outcome: str = "ok") -> PartVerdict:
    label = "free" if outcome == "ok" else "crack"
    return PartVerdict(camera, part_id, outcome, label, 0.5, "m1", 1, 2, 3, 4, 2, 2)


def publisher(url: str, **options: object) -> MqttPublisher:
    return MqttPublisher(MqttConfig.from_url(url, TOPIC, **{**FAST, **options}))


def part_ids(payloads: list[dict], camera: str) -> list[int]:
    return [p["part_id"] for p in payloads if p["camera_id"] == camera]


def wait_for_parts(sub: Subscriber, count: int, timeout_s: float = 10.0) -> list[dict]:
    """Verdicts received once `count` different parts arrived (duplicates may come too)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = sub.on("/verdict")
        if len({(p["camera_id"], p["part_id"]) for p in got}) >= count:
            return got
        time.sleep(0.02)
    return sub.on("/verdict")


def counter(kind: str, outcome: str) -> float:
    return metrics.MQTT_MESSAGES.labels(kind, outcome)._value.get()


def test_every_verdict_arrives_once_in_order_per_camera(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    pub = publisher(broker.url)
    for part in range(150):
        for camera in ("cam-a", "cam-b"):
            pub.verdict(verdict(camera, part, "defect" if part % 7 == 0 else "ok"))
    assert pub.flush(10)
    subscriber.wait_for("/verdict", 300)
    time.sleep(0.3)  # a duplicate would arrive by now
    got = subscriber.on("/verdict")
    assert part_ids(got, "cam-a") == list(range(150))
    assert part_ids(got, "cam-b") == list(range(150))
    assert {p["verdict"] for p in got} == {"ok", "defect"}
    assert set(got[0]) >= {"camera_id", "part_id", "verdict", "label", "score", "deadline_ts"}
    assert len(pub.take_delivered()) == 300
    assert pub.take_delivered() == []
    pub.close()
    assert subscriber.on("/publisher")[-1]["state"] == "offline"  # said on a clean close too


def test_a_part_is_published_once_even_if_offered_twice(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    pub = publisher(broker.url)
    before = counter("verdict", "duplicate")
    pub.verdict(verdict("cam-a", 1))
    pub.verdict(verdict("cam-a", 1, "uninspected"))  # a late second decision
    pub.verdict(verdict("cam-a", 2))
    assert pub.flush(5)
    assert part_ids(subscriber.wait_for("/verdict", 2), "cam-a") == [1, 2]
    assert counter("verdict", "duplicate") == before + 1
    pub.close()


def test_status_alerts_and_presence_topics(broker: Mosquitto, subscriber: Subscriber) -> None:
    pub = publisher(broker.url)
    pub.camera_status("cam-a", "streaming", 12.0, 0.1)
    pub.camera_status("cam-a", "streaming", 30.0, 0.05)
    pub.alert(AlertMessage(7, "cam-a", "crack", "open", 10, 1, None, None, 0.9, 3))
    pub.alert({"kind": "part", "camera_id": "cam-a", "part_id": 3}, key="part:cam-a:3")
    assert pub.flush(5)
    alerts = subscriber.wait_for("/alerts", 2)
    assert [a.get("alert_id", a.get("part_id")) for a in alerts] == [7, 3]
    assert set(pub.take_delivered()) == {"alert:7:open", "part:cam-a:3"}
    pub.close()
    late = Subscriber(broker, TOPIC)  # retained: a gate that connects later sees the latest
    statuses = late.wait_for("/cam-a/status", 1)
    late.close()
    assert [(s["parts_per_min"], s["ng_rate"]) for s in statuses] == [(30.0, 0.05)]


def test_an_unsendable_message_does_not_stall_the_rest(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    pub = publisher(broker.url, inflight_max=1)
    before = counter("status", "invalid")
    pub.camera_status("bad+camera", "streaming", 1.0, 0.0)  # a wildcard: no valid topic
    pub.verdict(verdict("cam-a", 1))
    assert pub.flush(5)
    assert part_ids(subscriber.wait_for("/verdict", 1), "cam-a") == [1]
    assert counter("status", "invalid") == before + 1
    pub.close()


def test_a_publish_that_races_a_lost_connection_counts_once_the_broker_acknowledges(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    """paho keeps a QoS 1 publish made while the connection is down and sends it after
    the reconnect, but its MQTTMessageInfo keeps rc NO_CONN, on which `is_published`
    raises: a publisher that asked it directly stalled (a CI run: flush() never ended).
    `publish_kept` clears that rc, so the same message is awaited like any other."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    raw = client.publish(f"{TOPIC}/race", b'{"kept": 1}', qos=1)  # no connection yet
    assert raw.rc == paho.MQTT_ERR_NO_CONN
    with pytest.raises(RuntimeError):
        raw.is_published()
    info = publish_kept(client, f"{TOPIC}/race", b'{"kept": 2}', retain=False)
    assert not info.is_published()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not info.is_published() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert info.is_published(), "sent after the connect and acknowledged"
        assert subscriber.wait_for("/race", 2) == [{"kept": 1}, {"kept": 2}]
    finally:
        client.loop_stop()
        client.disconnect()


def test_broker_restart_mid_run_loses_no_verdict(broker: Mosquitto, subscriber: Subscriber) -> None:
    pub = publisher(broker.url, inflight_max=20)
    for part in range(100):
        pub.verdict(verdict("cam-a", part))
    broker.stop()
    started = time.monotonic()
    for part in range(100, 200):
        pub.verdict(verdict("cam-a", part))
    assert time.monotonic() - started < 1.0  # the caller never waits on the broker
    time.sleep(0.3)
    assert pub.state == "disconnected" and pub.pending() > 0
    broker.start()
    assert pub.flush(10)
    got = part_ids(wait_for_parts(subscriber, 200), "cam-a")
    assert list(dict.fromkeys(got)) == list(range(200))  # none lost, first arrivals in order
    # QoS 1 duplicates only for what was in flight at the stop: at most the publisher's
    # window (resent to the broker) plus the broker's window to the subscriber (resent by it).
    assert len(got) - 200 <= 20 + BROKER_INFLIGHT
    pub.close()


def test_slow_broker_never_blocks_the_caller(broker: Mosquitto, subscriber: Subscriber) -> None:
    pub = publisher(broker.url, inflight_max=10)
    assert broker.process is not None
    broker.process.send_signal(signal.SIGSTOP)  # accepts nothing, acknowledges nothing
    try:
        slowest = 0.0
        for part in range(300):
            started = time.perf_counter()
            pub.verdict(verdict("cam-a", part))
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.25  # a busy machine's scheduling, not the broker
        time.sleep(0.3)
        assert pub.pending() >= 290
    finally:
        broker.process.send_signal(signal.SIGCONT)
    assert pub.flush(10)
    assert part_ids(subscriber.wait_for("/verdict", 300), "cam-a") == list(range(300))
    pub.close()


def test_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    _require_mosquitto()
    broker = Mosquitto(tmp_path / "broker")  # not started yet: the line starts before it
    pub = publisher(broker.url, queue_max=10)
    before = counter("verdict", "dropped")
    for part in range(25):
        pub.verdict(verdict("cam-a", part))
    assert pub.pending() == 10
    assert counter("verdict", "dropped") == before + 15
    pub.verdict(verdict("cam-a", 0))  # a dropped verdict may be offered again
    with broker:
        sub = Subscriber(broker, TOPIC)
        assert pub.flush(10)
        assert part_ids(sub.wait_for("/verdict", 10), "cam-a") == [*range(16, 25), 0]
        sub.close()
        pub.close()


def test_tokens_say_how_far_an_outbox_may_move_its_cursor(tmp_path: Path) -> None:
    _require_mosquitto()
    broker = Mosquitto(tmp_path / "broker")  # down: nothing can be acknowledged yet
    pub = publisher(broker.url, queue_max=4)
    confirmed: list[int] = []
    pub.on_confirmed(confirmed.append)  # called from the pump thread at each PUBACK
    assert pub.confirmed_through() is None and pub.room() == 4
    for token, part in ((10, 1), (11, 2), (12, 3)):
        pub.verdict(verdict("cam-a", part), token=token)
    pub.notify(AlertMessage(5, "cam-a", "crack", "raised", 3, 1, None, None, 0.9, 3), token=13)
    assert pub.confirmed_through() == 9 and pub.room() == 0
    pub.verdict(verdict("cam-a", 3), token=12)  # the outbox giving an entry again: skipped
    pub.verdict(verdict("cam-a", 4), token=14)  # the queue holds 4: token 10 is dropped
    assert pub.confirmed_through() == 10 and pub.pending() == 4
    with broker:
        sub = Subscriber(broker, TOPIC)
        assert pub.flush(10)
        assert pub.confirmed_through() == 14 and pub.room() == 4
        assert confirmed[-1] == 14 and confirmed == sorted(confirmed)
        pub.verdict(verdict("cam-a", 4), token=15)  # a second verdict for a part: settled
        assert pub.confirmed_through() == 15
        assert part_ids(sub.wait_for("/verdict", 3), "cam-a") == [2, 3, 4]
        assert [a["alert_id"] for a in sub.wait_for("/alerts", 1)] == [5]
        sub.close()
        pub.close()


def test_wrong_password_is_refused_clearly_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _require_mosquitto()
    caplog.set_level(logging.DEBUG)
    users = {"line": "other-password", "gate": "gate-password"}
    with Mosquitto(tmp_path / "broker", users=users) as broker:
        sub = Subscriber(broker, TOPIC, "gate", "gate-password")
        pub = publisher(broker.url_for("line", PASSWORD))
        for part in range(20):
            pub.verdict(verdict("cam-a", part))
        deadline = time.monotonic() + 5
        while pub.state != "refused" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.state == "refused"
        assert "not authorized" in (pub.last_error or "").lower()
        assert pub.pending() == 20
        assert "refused the connection" in caplog.text
        broker.set_password("line", PASSWORD)  # the operator fixes the broker's password file
        assert pub.flush(10)
        assert part_ids(sub.wait_for("/verdict", 20), "cam-a") == list(range(20))
        pub.close()
        sub.close()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in generate_latest().decode()
    assert "line:***@" in caplog.text


def test_tls_with_a_private_ca_and_a_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _require_mosquitto()
    caplog.set_level(logging.DEBUG)
    tls = make_tls(tmp_path / "tls")
    with Mosquitto(tmp_path / "broker", users={"line": PASSWORD}, tls=tls) as broker:
        sub = Subscriber(broker, TOPIC, "line", PASSWORD)
        untrusted = publisher(broker.url_for("line", PASSWORD))  # the system CAs: no trust
        pub = publisher(broker.url_for("line", PASSWORD), ca_file=tls.ca_file)
        for part in range(10):
            pub.verdict(verdict("cam-a", part))
            untrusted.verdict(verdict("cam-b", part))
        assert pub.flush(10)
        assert part_ids(sub.wait_for("/verdict", 10), "cam-a") == list(range(10))
        assert untrusted.state != "connected" and untrusted.pending() == 10
        assert part_ids(sub.on("/verdict"), "cam-b") == []
        untrusted.close(timeout_s=0.2)
        pub.close()
        sub.close()
    assert PASSWORD not in caplog.text


def test_last_will_marks_a_killed_publisher_offline(
    broker: Mosquitto, subscriber: Subscriber
) -> None:
    code = (
        "import sys, time\n"
        "from linewatch.pipeline.outputs.mqtt import MqttConfig, MqttPublisher\n"
        f"pub = MqttPublisher(MqttConfig.from_url(sys.argv[1], {TOPIC!r}))\n"
        "pub.camera_status('cam-a', 'streaming', 1.0, 0.0)\n"
        "pub.flush(5)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, broker.url], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        assert subscriber.wait_for("/publisher", 1)[-1]["state"] == "online"
    finally:
        child.kill()
        child.wait()
    presence = subscriber.wait_for("/publisher", 2)
    assert presence[-1]["state"] == "offline"
    assert presence[-1]["reason"] == "connection lost"


def test_settings_build_the_publisher_config(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"LINEWATCH_OUTPUTS__MQTT__URL": f"mqtts://gate:{PASSWORD}@broker.local"},
        overrides={"line": "press-3"},
    )
    assert settings.mqtt_topic == "linewatch/press-3"
    config = MqttConfig.from_url(settings.outputs.mqtt.url or "", settings.mqtt_topic)
    assert (config.host, config.port, config.tls, config.username) == (
        "broker.local",
        8883,
        True,
        "gate",
    )
    assert PASSWORD not in repr(config) and PASSWORD not in config.safe_url
    assert MqttPublisher.from_settings(load_settings()) is None
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"LINEWATCH_OUTPUTS__MQTT__URL": f"tcp://gate:{PASSWORD}@h"})
    assert "outputs.mqtt.url" in str(error.value) and PASSWORD not in str(error.value)
    with pytest.raises(ConfigError, match="outputs.mqtt.topic"):
        load_settings(overrides={"outputs": {"mqtt": {"topic": "lw/#"}}})
