"""One dead camera does not stop the line: it waits in `backoff` while the rest runs.

`linewatch run` with an RTSP camera that does not answer at start-up and a video
file: the file is analysed, the camera's state (Redis, `linewatch status`, metric)
is `backoff`, and once its server comes up the camera streams. `--strict` keeps
the fail-fast start-up (tests/test_cli.py). A worker whose metrics port is taken
runs without its endpoint (the file's ingest, in the first test).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml

from linewatch.demo import write_demo_video
from linewatch.pipeline.streams.embedded_redis import free_port
from tests.support.services import clean_env, free_ports, linewatch, wait_for

pytestmark = pytest.mark.slow

FRAMES = 30


def start_line(tmp_path: Path, redis_url: str, line: str, rtsp_url: str) -> tuple[Path, Path]:
    video = tmp_path / "file-cam.mp4"
    write_demo_video(video, FRAMES, fps=10)
    config = tmp_path / "line.yaml"
    settings = {
        "line": line,
        "redis_url": redis_url,
        "data_dir": str(tmp_path),
        # worker i serves metrics_port + i: ingest of "dead" (0), of "file" (1), infer, sink
        "metrics_port": free_ports(4),
        "cameras": [{"id": "dead", "url": rtsp_url}, {"id": "file", "url": str(video)}],
        "ingest": {"open_timeout_s": 2, "reconnect_max_s": 2},
    }
    config.write_text(yaml.safe_dump(settings))
    return config, video


class RunningLine:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        command = [sys.executable, "-m", "linewatch.cli", "run", "--config", str(config)]
        self.process = subprocess.Popen(
            command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=clean_env()
        )

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)
        return self.log.read_text()


def ingest(client: redis.Redis, line: str, camera: str) -> dict[str, str]:
    fields = client.hgetall(f"lw:ingest:{line}:{camera}")
    return {k.decode(): v.decode() for k, v in fields.items()}


def camera_state_metric(port: int, camera: str) -> str | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f'linewatch_camera_state{{camera="{camera}"') and line.endswith(" 1.0"):
            return line.split('linewatch_camera_state="')[1].split('"')[0]
    return None


def assert_file_analysed_while_camera_waits(
    client: redis.Redis, line: str, config: Path, running: RunningLine
) -> None:
    def file_written() -> bool:
        assert running.process.poll() is None, running.log.read_text()[-3000:]
        written = int(client.hget(f"lw:stats:{line}", "written") or 0)
        return ingest(client, line, "file").get("done") == "1" and written == FRAMES

    def explain() -> str:
        stats = {k.decode(): v.decode() for k, v in client.hgetall(f"lw:stats:{line}").items()}
        file, dead = ingest(client, line, "file"), ingest(client, line, "dead")
        log = running.log.read_text()[-4000:]
        return f"stats {stats}, file ingest {file}, dead ingest {dead}; log:\n{log}"

    wait_for(file_written, 180, explain)
    assert ingest(client, line, "dead").get("state") in ("backoff", "connecting")
    wait_for(lambda: ingest(client, line, "dead").get("state") == "backoff", 30)
    port = yaml.safe_load(config.read_text())["metrics_port"]
    assert camera_state_metric(port, "dead") in ("backoff", "connecting")
    status = linewatch("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if "dead" in line)
    assert "backoff" in row or "connecting" in row, status.stdout


def test_an_unreachable_camera_waits_in_backoff_while_the_file_is_analysed(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, line_name: str
) -> None:
    rtsp = f"rtsp://op:hunter2@127.0.0.1:{free_port()}/cam1"
    config, _ = start_line(tmp_path, redis_url, line_name, rtsp)
    file_metrics_port = yaml.safe_load(config.read_text())["metrics_port"] + 1
    with socket.socket() as taken:  # another program holds the file ingest's port
        taken.bind(("0.0.0.0", file_metrics_port))
        taken.listen()
        running = RunningLine(config, tmp_path / "line.log")
        try:
            assert_file_analysed_while_camera_waits(redis_client, line_name, config, running)
        finally:
            output = running.stop()
    assert running.process.returncode == 0, output[-3000:]
    assert "camera dead: " in output and "keeps retrying" in output
    assert "hunter2" not in output
    assert f"metrics port {file_metrics_port} unavailable" in output, output[-3000:]


def test_a_camera_that_comes_up_late_starts_streaming(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, line_name: str, rtsp_server
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    config, video = start_line(tmp_path, redis_url, line_name, f"rtsp://127.0.0.1:{port}/cam1")
    running = RunningLine(config, tmp_path / "line.log")
    try:
        assert_file_analysed_while_camera_waits(redis_client, line_name, config, running)
        rtsp_server(video, port=port)  # the camera finishes booting
        wait_for(lambda: int(ingest(redis_client, line_name, "dead").get("sent", 0)) > 0, 60)
        states = [
            fields[b"to"].decode()
            for _, fields in redis_client.xrange(f"lw:states:{line_name}:dead")
        ]
        assert "backoff" in states and "streaming" in states
        assert states.index("backoff") < states.index("streaming")
    finally:
        output = running.stop()
    assert running.process.returncode == 0, output[-3000:]
