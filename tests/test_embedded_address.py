"""A line on the embedded defaults (no redis_url) is found by the other commands
through its data folder: <data_dir>/redis/address while it runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from linewatch.demo import write_demo_video
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis, free_port
from tests.support.api import wait_healthy
from tests.support.services import assert_clean_error, clean_env, linewatch


def embedded_config(tmp_path: Path, camera_url: str) -> Path:
    path = tmp_path / "line.yaml"  # no redis_url, no redis: section
    path.write_text(
        f"line: embedded\ndata_dir: {tmp_path / 'data'}\n"
        f"cameras:\n  - id: cam-embedded\n    url: '{camera_url}'\n    realtime: true\n"
    )
    return path


def test_status_and_model_show_find_a_running_embedded_line(tmp_path: Path) -> None:
    video = tmp_path / "line.mp4"
    write_demo_video(video, 600, fps=10)  # 60 s replayed in real time: the line keeps running
    path = embedded_config(tmp_path, str(video))
    address = tmp_path / "data" / "redis" / "address"
    run = subprocess.Popen(
        [sys.executable, "-m", "linewatch.cli", "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 90
        while not address.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert address.exists(), run.stderr.read() if run.poll() is not None else "no address"
        url = address.read_text().strip()
        assert url.startswith("redis://127.0.0.1:")
        status = linewatch("status", "--config", str(path))
        assert status.returncode == 0, status.stderr
        assert "cam-embedded" in status.stdout  # the running line's camera, from its Redis
        show = linewatch("model", "show", "--config", str(path))
        assert show.returncode == 0, show.stderr
        assert show.stdout.startswith("requested: none")
        assert _serve_health(path)["redis"] == "ok"  # serve has the line's live feed
        second = linewatch("run", "--config", str(path))
        assert_clean_error(second, "a line is already running on data_dir", "another data_dir")
        assert address.read_text().strip() == url  # the running line's address is untouched
    finally:
        run.send_signal(signal.SIGINT)  # a clean stop removes the address
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert not address.exists()
    after = linewatch("status", "--config", str(path))
    assert_clean_error(after, "no line is running on data_dir", str(tmp_path / "data"))
    assert _serve_health(path)["redis"] == "not configured"  # SQL data only, as before


def _serve_health(config: Path) -> dict:  # type: ignore[type-arg]
    port = free_port()
    command = [sys.executable, "-m", "linewatch.cli", "serve", "--config", str(config)]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        return wait_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_no_line_running_is_a_clear_error_for_every_redis_command(tmp_path: Path) -> None:
    path = embedded_config(tmp_path, str(tmp_path / "missing.mp4"))
    model = str(Path(__file__).resolve().parent.parent / "models" / "linewatch-tile")
    video = str(tmp_path / "missing.mp4")
    commands = [["status"], ["model", "show"], ["model", "use", model], ["dlq", "list"]]
    for command in [*commands, ["jobs"], ["analyze", video]]:
        result = linewatch(*command, "--config", str(path))
        assert_clean_error(result, "no line is running on data_dir", "linewatch run --config")
    worker = linewatch("worker", "sink", "--config", str(path))  # a worker logs its error
    assert worker.returncode == 2 and "Traceback" not in worker.stderr
    assert "sink worker: no line is running on data_dir" in worker.stderr


def test_a_stale_address_file_is_not_a_running_line(tmp_path: Path) -> None:
    path = embedded_config(tmp_path, str(tmp_path / "missing.mp4"))
    address = broker.address_file(tmp_path / "data")
    address.parent.mkdir(parents=True)
    address.write_text(f"redis://127.0.0.1:{free_port()}/0\n")  # a server that died
    started = time.monotonic()
    result = linewatch("status", "--config", str(path))
    assert_clean_error(result, "no line is running on data_dir", str(tmp_path / "data"))
    assert time.monotonic() - started < 30


def test_embedded_redis_publishes_and_withdraws_its_address(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with EmbeddedRedis(data_dir / "redis") as server:
        assert broker.address_file(data_dir).read_text().strip() == server.url
        assert broker.embedded_url(data_dir) == server.url  # answers PING
    assert not broker.address_file(data_dir).exists()
    assert broker.embedded_url(data_dir) is None


def test_the_address_of_a_killed_server_is_detected_as_stale(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = EmbeddedRedis(data_dir / "redis").start()
    try:
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        assert broker.address_file(data_dir).exists()  # left behind by the dead server
        assert broker.embedded_url(data_dir) is None
    finally:
        server.stop()


def test_an_address_now_served_by_another_server_is_stale(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    with EmbeddedRedis(other / "redis") as server:  # the dead line's port, reused
        address = broker.address_file(mine)
        address.parent.mkdir(parents=True)
        address.write_text(server.url + "\n")
        assert broker.embedded_url(other) == server.url
        assert broker.embedded_url(mine) is None
