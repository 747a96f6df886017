"""Services and processes for tests: a private password-protected Redis, the real CLI in a
fresh interpreter, a sink run in a thread, stream feeding, waiting."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from linewatch.pipeline.config import DEFAULT_MODEL_DIR
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import find_redis_server, free_port
from linewatch.workers import sink


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without LINEWATCH_* variables, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    return {**clean, **(env or {})}


def linewatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "linewatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(env),
    )


def assert_clean_error(run: subprocess.CompletedProcess, *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("linewatch: error: ")
    for needle in needles:
        assert needle in last, last


@contextmanager
def private_redis(data_dir: Path, password: str) -> Iterator[str]:
    """A redis-server of its own that requires `password`: its URL (password included)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--requirepass", password, "--save", "", "--dir", str(data_dir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        wait_for(lambda: _pings(client), 10)
        client.close()
        yield url
    finally:
        server.terminate()
        server.wait(10)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


def free_ports(count: int) -> int:
    """A port whose `count` - 1 successors are free too (checked now), for settings that
    number ports from a base (`metrics_port`: worker i serves base + i)."""
    for _ in range(100):
        base = free_port()
        if all(_bindable(base + offset) for offset in range(1, count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float = 30,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll `condition` until it holds; on timeout fail with what `explain` says."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s {explain()}"
        time.sleep(0.1)


def add_entries(client: broker.Client, stream: str, entries: list[dict[bytes, bytes]]) -> None:
    """XADD entries in one MULTI, as ingest and inference do (for tests that feed streams)."""
    broker.add_to_streams(client, [(stream, entries, None)])


def run_sink_until(client, engine, settings, consumer, done, timeout_s=20.0) -> sink.SinkCounters:  # type: ignore[no-untyped-def]
    """Run the sink in a thread until `done()` holds (or the timeout), then stop it."""
    stop = StopFlag()
    outcome: dict[str, sink.SinkCounters] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(c=sink.run(client, engine, settings, consumer, stop))
    )
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    return outcome["c"]


def copy_with_version(tmp_path: Path, version: str) -> Path:
    folder = tmp_path / f"model-{version}"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Global"]["model_version"] = version
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    return folder
