"""A private Mosquitto broker for tests: free port, optional password file and TLS.

Persistence is on, so a stop (SIGTERM, the broker saves its state) and a start on the same
port keep a subscriber's persistent session and the messages queued for it.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT_S = 5.0
BROKER_INFLIGHT = 20  # QoS 1 messages the broker sends a subscriber before its acks
EC = ("-pkeyopt", "ec_paramgen_curve:prime256v1")  # fast keys


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls(folder: Path) -> Tls:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost, made by openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem")
    )
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        ["req", "-x509", "-newkey", "ec", *EC, "-nodes", "-days", "2", "-subj", "/CN=test CA"]
        + ["-keyout", str(ca_key), "-out", str(ca)],
        ["req", "-newkey", "ec", *EC, "-nodes", "-subj", "/CN=localhost"]
        + ["-keyout", str(key), "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key)]
        + ["-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)],
    ):
        subprocess.run(["openssl", *command], check=True, capture_output=True)
    return Tls(ca, cert, key)


class Mosquitto:
    """`with Mosquitto(tmp) as broker:` ... `broker.stop()` / `broker.start()` (same port)."""

    def __init__(
        self, folder: Path, users: dict[str, str] | None = None, tls: Tls | None = None
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.users = users
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(self._config_text())

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}:{password}@127.0.0.1:{self.port}"

    def _config_text(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"user {getpass.getuser()}",  # a broker started by root keeps its rights
            "persistence true",
            f"persistence_location {self.folder}/",
            "max_queued_messages 100000",
            f"max_inflight_messages {BROKER_INFLIGHT}",
            f"log_dest file {self.folder / 'mosquitto.log'}",
        ]
        if self.users:
            self.passwords.touch()
            for user, password in self.users.items():
                self._write_password(user, password)
            lines.append(f"password_file {self.passwords}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        return "\n".join(lines) + "\n"

    @property
    def passwords(self) -> Path:
        return self.folder / "passwords"

    def _write_password(self, user: str, password: str) -> None:
        command = ["mosquitto_passwd", "-b", str(self.passwords), user, password]
        subprocess.run(command, check=True, capture_output=True)

    def set_password(self, user: str, password: str) -> None:
        """Change a user's password; SIGHUP makes the running broker reload the file."""
        self._write_password(user, password)
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """SIGTERM: the broker saves its persistent state and exits."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Subscriber:
    """A QoS 1 subscriber with a persistent session: it gets what was queued while away."""

    def __init__(
        self, broker: Mosquitto, topic: str, user: str | None = None, password: str | None = None
    ) -> None:
        self.topic = topic
        self.messages: list[tuple[str, dict[str, Any], bool]] = []  # topic, payload, retained
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client_id = f"sub-{uuid.uuid4().hex[:8]}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id, clean_session=False)
        if user:
            self.client.username_pw_set(user, password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.tls.ca_file))
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise RuntimeError("the test subscriber did not subscribe")

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        client.subscribe(f"{self.topic}/#", qos=1)

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, json.loads(message.payload), message.retain))

    def on(self, suffix: str) -> list[dict[str, Any]]:
        """Payloads received on topics ending with `suffix`, in arrival order."""
        with self._lock:
            return [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]

    def wait_for(self, suffix: str, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.on(suffix)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.on(suffix)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
