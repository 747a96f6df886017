"""Fixture: a real GStreamer RTSP server process serving test videos.

Load with `pytest_plugins = ["tests.conftest_rtsp"]` in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from linewatch.pipeline.streams.embedded_redis import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def gstreamer_available() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0')"
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@dataclass
class RtspServer:
    process: subprocess.Popen
    port: int
    credentials: str = ""

    @property
    def url(self) -> str:
        return self.url_for("/cam1")

    def url_for(self, mount: str) -> str:
        return f"rtsp://{self.credentials}127.0.0.1:{self.port}{mount}"

    def pause(self) -> None:
        """SIGSTOP: the socket stays open but nothing more is sent (a stall)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)


def _wait_for_port(process: subprocess.Popen, port: int, log: Path, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    process.kill()
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"RTSP server did not listen on {port}: {tail}")


def _require_gstreamer() -> None:
    if gstreamer_available():
        return
    message = "GStreamer RTSP server missing: apt-get install $(cat .ci/apt-packages.txt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture()
def rtsp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RtspServer]]:
    """Factory: rtsp_server(video, user=None, password=None, port=None, mounts=None).

    Serves `video` at /cam1 and each `mounts` entry ({"/cam2": path}) at its path;
    every server started is stopped (resumed first if paused) after the test.
    """
    _require_gstreamer()
    servers: list[RtspServer] = []
    logs = tmp_path_factory.mktemp("rtsp")

    def start(
        video: Path,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        mounts: dict[str, Path] | None = None,
    ) -> RtspServer:
        port = port or free_port()
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(port), str(video)]
        for mount, path in (mounts or {}).items():
            command += ["--mount", f"{mount}={path}"]
        if user:
            command += ["--user", user, "--password", password or ""]
        log = logs / f"server-{port}-{len(servers)}.log"
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)
        server = RtspServer(process, port, f"{user}:{password}@" if user else "")
        servers.append(server)
        _wait_for_port(process, port, log)
        return server

    yield start
    for server in servers:
        server.stop()
