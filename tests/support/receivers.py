"""Receivers of what the line announces: a webhook endpoint (and the signature a receiver
computes), Redis pub/sub channels. MQTT: tests/support/mosquitto.py."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from linewatch.pipeline.streams.embedded_redis import free_port


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


class ChannelListener:
    """Collects the JSON messages published on Redis pub/sub channels while it runs."""

    def __init__(self, client, *channels: str) -> None:  # type: ignore[no-untyped-def]
        import json
        import threading

        self.messages: dict[str, list[dict]] = {channel: [] for channel in channels}
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(*channels)
        self._stop = threading.Event()

        def listen() -> None:
            while not self._stop.is_set():
                message = self._pubsub.get_message(timeout=0.1)
                if message and message["type"] == "message":
                    channel = message["channel"].decode()
                    self.messages[channel].append(json.loads(message["data"]))

        self._thread = threading.Thread(target=listen, daemon=True)
        self._thread.start()
        time.sleep(0.2)  # subscribed before anything is published

    def close(self) -> None:
        time.sleep(0.3)  # what was published just before arrives
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
