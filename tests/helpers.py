"""Builders shared by tests (test modules import these, never each other)."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.streams.embedded_redis import find_redis_server, free_port


def make_settings(tmp_path: Path, line: str, redis_url: str, **overrides: object) -> Settings:
    data = {"line": line, "redis_url": redis_url, "data_dir": str(tmp_path), **overrides}
    return load_settings(environ={}, overrides=data)


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


def hmac_signature(body: bytes, secret: str) -> str:
    """X-Linewatch-Signature as a receiver computes it, written here independently."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: records (headers, body) of every POST, answers `status`."""

    status = 200
    delay_s = 0.0
    received: list[tuple[dict, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        time.sleep(Receiver.delay_s)
        self.send_response(Receiver.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, type[Receiver]]]:
    """An HTTP receiver on a free loopback port, served by a thread: (url, Receiver)."""
    Receiver.received, Receiver.status, Receiver.delay_s = [], 200, 0.0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", Receiver
    finally:
        server.shutdown()
        server.server_close()


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


def wait_for(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
