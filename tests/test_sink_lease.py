"""One active sink per line: a second sink waits as a standby and takes over when the
active one dies (real Redis, real `linewatch worker sink` processes, SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from linewatch.pipeline import keys
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.lease import Lease
from linewatch.workers import sink
from tests.support.builders import result
from tests.support.rows import count_detections
from tests.support.services import add_entries, clean_env, wait_for

TTL_S = 2.0


def test_the_lease_is_held_by_one_owner_at_a_time(redis_client, line_name) -> None:  # type: ignore[no-untyped-def]
    key = keys.sink_lease(line_name)
    first = Lease(redis_client, key=key, owner="sink-a", ttl_s=TTL_S)
    second = Lease(redis_client, key=key, owner="sink-b", ttl_s=TTL_S)
    assert first.try_acquire() and not second.try_acquire()
    assert first.try_acquire(), "a restarted sink of the same name takes its lease back"
    assert second.holder() == "sink-a" and 0 < redis_client.pttl(key) <= TTL_S * 1000
    second.release()  # not its lease: nothing happens
    assert first.holder() == "sink-a"
    first.release()
    assert second.try_acquire() and not first.renew()
    second.release()


class SinkProcess:
    def __init__(self, config: Path, consumer: str, log: Path) -> None:
        self.log = log
        command = [sys.executable, "-m", "linewatch.cli", "worker", "sink"]
        self.process = subprocess.Popen(
            [*command, "--config", str(config), "--id", consumer],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )

    def output(self) -> str:
        return self.log.read_text()


def test_a_standby_sink_takes_over_when_the_active_one_dies(
    tmp_path: Path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    database_url = f"sqlite:///{tmp_path / 'line.db'}"
    config = tmp_path / "sink.yaml"
    settings = {
        "line": line_name,
        "redis_url": redis_url,
        "database_url": database_url,
        "data_dir": str(tmp_path),
        "sink": {"block_ms": 50, "lease_ttl_s": TTL_S},
    }
    config.write_text(yaml.safe_dump(settings))
    stream = keys.results_stream(line_name)
    broker.ensure_group(redis_client, stream, sink.GROUP)
    engine = storage.open_database(database_url)
    lease = Lease(redis_client, key=keys.sink_lease(line_name), owner="", ttl_s=TTL_S)

    active = SinkProcess(config, "sink-a", tmp_path / "a.log")
    wait_for(lambda: lease.holder() == "sink-a", 60)
    standby = SinkProcess(config, "sink-b", tmp_path / "b.log")
    try:
        wait_for(lambda: "standby: sink-a is the active sink" in standby.output(), 60)
        add_entries(redis_client, stream, [result(seq).encode() for seq in range(1, 11)])
        wait_for(lambda: count_detections(engine) == 10)
        assert lease.holder() == "sink-a" and "took over" not in standby.output()

        os.kill(active.process.pid, signal.SIGKILL)
        active.process.wait(10)
        add_entries(redis_client, stream, [result(seq).encode() for seq in range(11, 21)])
        wait_for(lambda: count_detections(engine) == 20, 60)
        assert lease.holder() == "sink-b"
        assert "sink-b took over the sink lease" in standby.output()
    finally:
        for process in (active.process, standby.process):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(30)
    assert standby.process.returncode == 0, standby.output()[-2000:]
    assert lease.holder() is None, "a sink that stops hands its lease back"
    engine.dispose()
