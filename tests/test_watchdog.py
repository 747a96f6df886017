"""The supervisor's watchdog: a worker whose heartbeat stops (SIGSTOP, a hung call) is
killed and restarted, counted in the line's stats; a beating worker is left alone."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.line import watch_workers, worker_beats
from linewatch.pipeline import keys
from linewatch.pipeline.runtime import Role, Supervisor
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.streams import broker
from linewatch.schemas.tables import Detection, Part
from linewatch.status import streams_table
from tests.support.builders import belt_line_config, make_settings
from tests.support.services import clean_env

LIMIT_S = 3.0


def beat(redis_url: str, key: str) -> None:
    """A worker that only beats, as the consumer loop does between batches."""
    client = broker.connect(redis_url)
    while True:
        fields = {"pid": os.getpid(), "seen": int(time.time()), "role": "infer"}
        broker.heartbeat(client, key, 15, fields)
        time.sleep(0.2)


def _until(condition: Callable[[], bool], timeout_s: float, step: Callable[[], None]) -> float:
    """Seconds until `condition` held, stepping the supervisor meanwhile."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, "timed out"
        step()
        time.sleep(0.1)
    return time.monotonic() - start


def test_a_stopped_worker_is_killed_and_restarted_within_the_limit(
    redis_client, redis_url, line_name, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, line_name, redis_url, supervisor={"hang_limit_s": LIMIT_S})
    role = Role("infer:0", beat, (redis_url, settings.worker_key("w0")))
    supervisor = Supervisor([role], settings.supervisor.hang_limit_s)

    def step() -> None:
        supervisor.poll()
        watch_workers(supervisor, redis_client, settings)

    def beating() -> bool:
        return role.process is not None and role.process.pid in worker_beats(redis_client, settings)

    supervisor.start()
    try:
        _until(beating, 60, step)
        calm_until = time.monotonic() + LIMIT_S + 1
        _until(lambda: time.monotonic() >= calm_until, LIMIT_S + 5, step)
        assert role.hung == 0, "a beating worker is left alone"
        first = role.process.pid  # type: ignore[union-attr]
        os.kill(first, signal.SIGSTOP)
        with caplog.at_level(logging.ERROR, logger="linewatch.pipeline.runtime"):
            killed_after = _until(lambda: role.hung == 1, 30, step)
        assert killed_after <= LIMIT_S + 2.5, "killed within the limit (+ beat and watch cadence)"
        assert "sent no heartbeat" in caplog.text and "hang_limit_s" in caplog.text
        _until(lambda: beating() and role.process.pid != first, 60, step)  # type: ignore[union-attr]
        assert int(redis_client.hget(settings.stats_key, "watchdog_restarts")) == 1
        console = Console(record=True, width=120)
        console.print(streams_table(redis_client, settings))
        assert "watchdog_restarts" in console.export_text()
    finally:
        supervisor.stop(timeout_s=5)


class FakeProcess:
    pid = 4242
    killed = False

    def is_alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True

    def join(self, timeout: float | None = None) -> None:
        pass


def test_silence_counts_from_the_last_beat_seen_and_not_while_the_supervisor_was_blind() -> None:
    role = Role("infer:0", beat, ())
    role.process = process = FakeProcess()  # type: ignore[assignment]
    supervisor = Supervisor([role], hang_limit_s=10)
    assert supervisor.watch({}, now=0) == [], "never beat: still loading"
    for second in range(1, 21):  # beating: its value changes
        assert supervisor.watch({4242: float(second)}, now=second) == []
    for second in range(21, 31):  # silent 10 s: not over the limit yet
        assert supervisor.watch({4242: 20.0}, now=second) == []
    # Redis unreadable from 30 to 60 s: the supervisor saw nothing, so counts from 60
    for second in range(60, 71):
        assert supervisor.watch({4242: 20.0}, now=second) == []
    assert supervisor.watch({4242: 20.0}, now=71) == [role]
    assert process.killed and role.hung == 1


def test_no_limit_no_watchdog() -> None:
    role = Role("sink", beat, ())
    assert Supervisor([role]).watch({1: 0.0}, now=1e9) == []


LIVE_PARTS = 16
LIVE_LIMIT_S = 8.0  # a loaded CPU runs a batch well within it


def infer_pid(client: broker.Client, line: str) -> int | None:
    for key in broker.live_keys(client, keys.worker(line, "*")):
        fields = client.hgetall(key)
        if fields.get(b"role") == b"infer" and b"pid" in fields:
            return int(fields[b"pid"])
    return None


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"not reached in {timeout_s} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.chaos
def test_a_stopped_inference_worker_is_replaced_in_a_live_run(
    tmp_path: Path, redis_client, redis_url, line_name, sqlite_url
) -> None:  # type: ignore[no-untyped-def]
    database_url = sqlite_url  # the default database; the watchdog does not touch it
    spec = MovingLineSpec(parts=LIVE_PARTS, fps=20, seed=5)
    ((video, _, _),) = simulate_moving(tmp_path / "line", spec)
    path = belt_line_config(
        tmp_path,
        line=line_name,
        video=video,
        database_url=database_url,
        redis_url=redis_url,
        verdict={"deadline_ms": 120_000},  # parts wait for the replaced worker's views
        supervisor={"hang_limit_s": LIVE_LIMIT_S},
    )
    engine = open_database(database_url)
    log = (tmp_path / "run.log").open("w")
    command = [sys.executable, "-m", "linewatch.cli", "run", "--config", str(path)]
    line = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_until(lambda: count(engine, Part) >= 3, 120, "3 parts")
        stopped = infer_pid(redis_client, line_name)
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        replaced = lambda: infer_pid(redis_client, line_name) not in (None, stopped)  # noqa: E731
        wait_until(replaced, LIVE_LIMIT_S + 30, "the hung worker is replaced")
        assert line.wait(180) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if line.poll() is None:
            line.kill()
        log.close()
    with Session(engine) as session:
        parts = session.execute(select(Part.part_id, Part.views_sent, Part.views_inferred)).all()
        seqs = session.scalars(select(Detection.seq)).all()
    run_log = (tmp_path / "run.log").read_text()
    assert "sent no heartbeat" in run_log
    assert len(parts) == LIVE_PARTS, "every part on the belt has one row"
    assert all(sent == inferred for _, sent, inferred in parts), "no view lost"
    assert len(seqs) == len(set(seqs)), "no view written twice"
    assert int(redis_client.hget(keys.stats(line_name), "watchdog_restarts")) == 1
    engine.dispose()


def count(engine, table) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)
