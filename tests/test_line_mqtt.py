"""A whole parts-mode line (ingest + Paddle + sink processes) sends every part's verdict
to a real Mosquitto broker: one message per part row, OK parts too, in part order; and
keeps doing so, each part's decision once, while its sink is killed with SIGKILL and the
broker restarts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.line import run_line
from linewatch.pipeline.config import load_settings
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.streams import broker
from linewatch.schemas.tables import Alert, Part
from tests.support.builders import belt_line_config
from tests.support.mosquitto import BROKER_INFLIGHT, Mosquitto, Subscriber
from tests.support.receivers import ChannelListener
from tests.support.services import clean_env


def test_every_part_verdict_reaches_the_broker_once(tmp_path: Path) -> None:
    ((video, _, _),) = simulate_moving(tmp_path / "line", MovingLineSpec(parts=6, seed=3))
    with Mosquitto(tmp_path / "broker") as broker:
        subscriber = Subscriber(broker, "lw-test")
        settings = load_settings(
            overrides={
                "line": "mqtt-line",
                "data_dir": str(tmp_path / "data"),
                "cameras": [
                    {
                        "id": "cam",
                        "url": str(video),
                        "live": False,
                        "parts": {"method": "contrast", "merge_gap": 64},
                    }
                ],
                "outputs": {"mqtt": {"url": broker.url, "topic": "lw-test"}},
            }
        )
        run_line(settings, False, lambda _stats: None)
        engine = open_database(settings.resolved_database_url())
        with Session(engine) as session:
            rows = session.execute(select(Part.part_id, Part.verdict).order_by(Part.part_id)).all()
        engine.dispose()
        assert len(rows) == 6
        verdicts = subscriber.wait_for("cam/verdict", len(rows))
        assert [(v["part_id"], v["verdict"]) for v in verdicts] == [tuple(r) for r in rows]


CHAOS_PARTS = 24
INFLIGHT = 5  # outputs.mqtt.inflight_max in the chaos line


def sink_pid(client: broker.Client, line: str) -> int | None:
    for key in broker.live_keys(client, f"lw:worker:{line}:sink-*"):
        pid = client.hget(key, "pid")
        if pid:
            return int(pid)
    return None


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {what}"
        time.sleep(0.05)


def part_count(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Part)) or 0)


def chaos_config(tmp_path, line, redis_url, database_url, video, broker_url) -> Path:  # type: ignore[no-untyped-def]
    return belt_line_config(
        tmp_path,
        line=line,
        video=video,
        database_url=database_url,
        redis_url=redis_url,
        verdict={
            "deadline_ms": 120_000,  # a restarted sink still decides in time
            "line_alarm": {"run": 0, "open_rate": 1.0, "close_rate": 0.5},
        },
        outputs={
            "pubsub": {"alerts_channel": f"{line}:alerts", "verdicts_channel": f"{line}:verdicts"},
            "mqtt": {
                "url": broker_url,
                "topic": f"lw/{line}",
                "inflight_max": INFLIGHT,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
                "status_every_s": 1.0,
            },
        },
    )


def by_part(payloads: list[dict]) -> dict[int, list[dict]]:  # type: ignore[type-arg]
    copies: dict[int, list[dict]] = {}  # type: ignore[type-arg]
    for payload in payloads:
        copies.setdefault(payload["part_id"], []).append(payload)
    return copies


@pytest.mark.slow
@pytest.mark.chaos
def test_a_moving_line_announces_each_part_once_across_sink_kills_and_a_broker_restart(
    tmp_path: Path, redis_client, redis_url, line_name, pg_url
) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL only: the outbox cursor on both databases is test_part_sink's.
    database_url = pg_url
    spec = MovingLineSpec(parts=CHAOS_PARTS, fps=20, seed=5)
    ((video, _, _),) = simulate_moving(tmp_path / "line", spec)
    engine = open_database(database_url)
    with Mosquitto(tmp_path / "broker") as mqtt:
        subscriber = Subscriber(mqtt, f"lw/{line_name}")
        listener = ChannelListener(redis_client, f"{line_name}:verdicts", f"{line_name}:alerts")
        config = chaos_config(tmp_path, line_name, redis_url, database_url, video, mqtt.url)
        log = (tmp_path / "run.log").open("w")
        line = subprocess.Popen(
            [sys.executable, "-m", "linewatch.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        try:
            for target in (4, 9):  # kill -9 the sink twice, mid-run, with parts on the belt
                wait_until(lambda t=target: part_count(engine) >= t, 90, f"{target} parts")
                pid = sink_pid(redis_client, line_name)
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                wait_until(
                    lambda p=pid: sink_pid(redis_client, line_name) not in (None, p),
                    30,
                    "the supervisor restarts the sink",
                )
            wait_until(lambda: part_count(engine) >= 14, 90, "14 parts")
            mqtt.stop()  # the broker goes away mid-run and comes back
            time.sleep(1.5)
            mqtt.start()
            assert line.wait(120) == 0, (tmp_path / "run.log").read_text()[-3000:]
        finally:
            if line.poll() is None:
                line.kill()
            log.close()
        with Session(engine) as session:
            rows = session.execute(select(Part.part_id, Part.verdict).order_by(Part.part_id)).all()
            ng_alerts = session.scalars(select(Alert.part_id).where(Alert.kind == "part")).all()
        parts = [part_id for part_id, _ in rows]
        ng = sorted(part_id for part_id, verdict in rows if verdict != "ok")
        assert len(parts) == CHAOS_PARTS, "every part on the belt has one row"
        assert sorted(ng_alerts) == ng, "one stored alert per NG part"
        subscriber.wait_for("cam/verdict", len(parts), timeout_s=20)
        time.sleep(1.0)  # a duplicate would be here by now
        verdicts = subscriber.on("cam/verdict")
        alerts = [a for a in subscriber.on("/alerts") if a.get("kind") == "part"]
        listener.close()
        subscriber.close()
        copies = by_part(verdicts)
        repeated = [p for p, c in copies.items() if len(c) > 1]
        print(f"MQTT verdicts: {len(verdicts)} for {len(parts)} parts, repeated {repeated}")
        assert list(copies) == parts, "every part's verdict arrived, first arrivals in order"
        assert dict(rows) == {p: c[0]["verdict"] for p, c in copies.items()}
        assert all(all(c == copy[0] for c in copy) for copy in copies.values()), (
            "a repeat is the same decision, never a second one"
        )
        # QoS 1: a repeat only for what the broker had but the sink had not yet stored as
        # acknowledged when it was killed, or what was in flight when the broker stopped
        assert len(verdicts) - len(parts) <= 3 * INFLIGHT + BROKER_INFLIGHT
        assert sorted(by_part(alerts)) == ng, "one MQTT alert per NG part"
        # pub/sub: each announcement exactly once, kills or not (a marker per announcement)
        announced = [v["part_id"] for v in listener.messages[f"{line_name}:verdicts"]]
        assert announced == parts
        pubsub_alerts = listener.messages[f"{line_name}:alerts"]
        assert sorted(a["part_id"] for a in pubsub_alerts if a["kind"] == "part") == ng
        statuses = subscriber.on("cam/status")
        assert any(s["state"] == "streaming" and s["parts_per_min"] > 0 for s in statuses)
        late = Subscriber(mqtt, f"lw/{line_name}")  # a gate connecting after the run
        retained = late.wait_for("cam/status", 1)[-1]
        presence = late.wait_for("/publisher", 1)[-1]
        late.close()
        assert set(retained) == {"camera_id", "state", "parts_per_min", "ng_rate", "ts"}
        assert presence["state"] == "offline"
    engine.dispose()
