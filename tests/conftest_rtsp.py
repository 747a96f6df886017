"""Fixture: a real GStreamer RTSP server process serving a test video."""

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

from linewatch.pipeline.redis_server import free_port

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
        return f"rtsp://{self.credentials}127.0.0.1:{self.port}/cam1"

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)


def _wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"RTSP server did not listen on {port}")


@pytest.fixture()
def rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """Factory: rtsp_server(video, user=None, password=None, port=None) -> RtspServer."""
    if not gstreamer_available():
        if os.environ.get("CI"):
            pytest.fail("GStreamer RTSP server missing: install .ci/apt-packages.txt")
        pytest.skip("GStreamer RTSP server not installed (apt packages in .ci/apt-packages.txt)")
    servers: list[RtspServer] = []

    def start(
        video: Path, user: str | None = None, password: str | None = None, port: int | None = None
    ) -> RtspServer:
        port = port or free_port()
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(port), str(video)]
        if user:
            command += ["--user", user, "--password", password or ""]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        server = RtspServer(process, port, f"{user}:{password}@" if user else "")
        servers.append(server)
        _wait_for_port(port)
        return server

    yield start
    for server in servers:
        server.stop()
