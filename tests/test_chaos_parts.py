"""Chaos for parts: the sink killed with SIGKILL while parts are mid-way (some views
stored, part ends waiting) loses no part and writes none twice, and every part's
verdict is announced once (through the outbox, so also one committed just before a
kill; pub/sub skips what a restarted sink gives again).

The results stream is fed as inference workers and ingest would feed it (view results
of overlapping parts, part ends sometimes before their last view), while a real
`linewatch worker sink` process is killed and restarted several times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis
from linewatch.schemas.tables import Alert, Part, PartEnd
from linewatch.workers import sink
from tests.support.builders import part_end, view_result
from tests.support.receivers import ChannelListener
from tests.support.services import add_entries

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

PARTS = 60
VIEWS = 3
KILLS = 4
FREE = (("free", 0.9), ("crack", 0.1))
CRACK = (("crack", 0.85), ("free", 0.15))


@pytest.fixture()
def aof_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


def is_defective(part_id: int) -> bool:
    return part_id % 4 == 0 or part_id % 7 == 0


def entries(part_id: int) -> list:  # type: ignore[type-arg]
    """A part's views and its end; every third part's end comes before its last view."""
    topk = CRACK if is_defective(part_id) else FREE
    first = part_id * 10
    views = [view_result(part_id, i, first + i, topk, evidence=b"jpeg") for i in range(VIEWS)]
    end = part_end(part_id, VIEWS, first, first + VIEWS - 1)
    return [*views[:-1], end, views[-1]] if part_id % 3 == 0 else [*views, end]


def feed(client: broker.Client, stream: str) -> None:
    """Parts overlap on the belt: the next part's first view before this part's end."""
    pending: list = []  # type: ignore[type-arg]
    for part_id in range(1, PARTS + 1):
        messages = entries(part_id)
        pending += messages[:2]
        add_entries(client, stream, [m.encode() for m in pending])
        pending = messages[2:]
        time.sleep(0.08)
    add_entries(client, stream, [m.encode() for m in pending])


class SinkProcess:
    def __init__(self, tmp_path: Path, config: dict) -> None:  # type: ignore[type-arg]
        self.config = tmp_path / "sink.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = tmp_path / "sink.log"
        self.process: subprocess.Popen | None = None  # type: ignore[type-arg]

    def start(self) -> None:
        command = [sys.executable, "-m", "linewatch.cli", "worker", "sink"]
        self.process = subprocess.Popen(
            [*command, "--config", str(self.config), "--id", "sink-a"],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(30)


def count(engine, table) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def wait_until(condition, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_kill_sink_mid_part_loses_and_doubles_no_part(aof_redis, tmp_path, database_url) -> None:  # type: ignore[no-untyped-def]
    line = f"chaosparts{os.getpid()}"
    config = {
        "line": line,
        "redis_url": aof_redis.url,
        "database_url": database_url,
        "data_dir": str(tmp_path),
        "sink": {"batch_size": 5, "block_ms": 50},
        "verdict": {
            "defect_threshold": 0.5,
            "deadline_ms": 120_000,
            "line_alarm": {"run": 0, "open_rate": 1},
        },
        "outputs": {"pubsub": {"verdicts_channel": f"{line}:verdicts"}},
    }
    client = broker.connect(aof_redis.url)
    stream = f"lw:results:{line}"
    broker.ensure_group(client, stream, sink.GROUP)
    engine = storage.open_database(database_url)
    listener = ChannelListener(client, f"{line}:verdicts")
    process = SinkProcess(tmp_path, config)
    process.start()
    producer = threading.Thread(target=feed, args=(client, stream))
    producer.start()
    targets = (8, 20, 35, 50)  # killed with views stored and part ends waiting
    assert len(targets) == KILLS
    for target in targets:
        wait_until(lambda t=target: count(engine, Part) >= t)
        process.kill()
        process.start()
    producer.join()
    wait_until(lambda: count(engine, Part) == PARTS and broker.backlog(client, stream) == 0)
    process.stop()
    listener.close()
    with Session(engine) as session:
        rows = session.execute(select(Part.part_id, Part.verdict, Part.views_inferred)).all()
        part_alerts = session.scalars(select(Alert.part_id).where(Alert.kind == "part")).all()
    print(process.log.read_text()[-2000:])
    assert sorted(part_id for part_id, _, _ in rows) == list(range(1, PARTS + 1))
    assert all(views == VIEWS for _, _, views in rows), "no part decided on missing views"
    defective = [p for p in range(1, PARTS + 1) if is_defective(p)]
    assert sorted(p for p, verdict, _ in rows if verdict == "defect") == defective
    assert sorted(part_alerts) == defective, "one alert per NG part, none twice"
    assert count(engine, PartEnd) == 0
    announced = [m["part_id"] for m in listener.messages[f"{line}:verdicts"]]
    assert sorted(set(announced)) == list(range(1, PARTS + 1)), "every verdict announced"
    # a kill between a PUBLISH and its cursor's commit gives it again: the marker skips it
    assert len(announced) == PARTS, "each verdict published once on pub/sub"
    engine.dispose()
    client.close()
