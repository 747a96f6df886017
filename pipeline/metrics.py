"""Prometheus metrics and a health endpoint, one HTTP server per worker process.

Each process serves its own registry (no multiprocess directory to manage):
`linewatch run` gives worker i the port `metrics_port + i`. `/healthz` answers
200 while the worker's loop has run within the last 30 s, else 503.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Enum,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HEALTHY_WITHIN_S = 30.0

FRAMES = Counter("linewatch_frames_total", "Frames by stage and outcome", ["stage", "outcome"])
INGEST_FRAMES = Counter(
    "linewatch_ingest_frames_total",
    "Per camera: frames sampled (decoded), messages sent, messages shed (dropped)",
    ["camera", "outcome"],
)
BATCH_SIZE = Histogram(
    "linewatch_batch_size", "Frames per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
INFERENCE_SECONDS = Histogram(
    "linewatch_inference_seconds", "Preprocess + predictor time per batch", buckets=LATENCY_BUCKETS
)
CAPTURE_TO_RESULT = Histogram(
    "linewatch_capture_to_result_seconds",
    "Capture to SQL commit, per frame",
    buckets=LATENCY_BUCKETS,
)
CAPTURE_TO_ALERT = Histogram(
    "linewatch_capture_to_alert_seconds",
    "Capture of the part (or of the line alarm's opening part) to its alert being decided",
    buckets=LATENCY_BUCKETS,
)
PENDING = Gauge(
    "linewatch_stream_pending",
    "Entries delivered to a consumer group and not yet acknowledged",
    ["stream", "group"],
)
DEAD_LETTERS = Counter(
    "linewatch_dead_letters_total", "Malformed entries moved to the dead-letter stream", ["stream"]
)
REDIS_RETRIES = Counter(
    "linewatch_redis_retries_total", "Redis calls retried, by reason (unavailable, oom)", ["reason"]
)
REDIS_FAILOVERS = Counter(
    "linewatch_redis_failovers_total", "Redis primary changes (Sentinel failovers) seen"
)
REDIS_WAIT_SHORT = Counter(
    "linewatch_redis_wait_short_total",
    "Writes a replica did not confirm within redis.wait_timeout_ms (WAIT)",
)
ALERTS = Counter(
    "linewatch_alerts_total", "Alerts raised: NG parts and line alarms opened", ["camera"]
)
WATCHDOG_RESTARTS = Counter(
    "linewatch_watchdog_restarts_total",
    "Worker processes killed and restarted because their heartbeat stopped (hung)",
    ["role"],
)
PARTS_ENDED = Counter(
    "linewatch_parts_ended_total",
    "Parts whose track ended at ingest, by reason (left, lost, stuck, stream-ended)",
    ["camera", "reason"],
)
PARTS = Counter(
    "linewatch_parts_total", "Parts decided, by the verdict sent to the line", ["camera", "verdict"]
)
PARTS_AT_DEADLINE = Counter(
    "linewatch_parts_uninspected_at_deadline_total",
    "Parts sent as uninspected at their verdict deadline, views still missing",
    ["camera"],
)
PARTS_LATE = Counter(
    "linewatch_parts_late_total",
    "Part verdicts reached after the deadline (recorded, not announced again)",
    ["camera"],
)
CAPTURE_TO_VERDICT = Histogram(
    "linewatch_capture_to_verdict_seconds",
    "A part's last capture to its verdict being written",
    buckets=LATENCY_BUCKETS,
)
BACKLOG = Gauge("linewatch_stream_backlog", "Entries not yet done in a stream", ["stream"])
CAMERA_STATE = Enum(
    "linewatch_camera_state",
    "Connection state of each camera's ingest",
    ["camera"],
    states=["connecting", "streaming", "stalled", "backoff", "stopped"],
)
MQTT_MESSAGES = Counter(
    "linewatch_mqtt_messages_total",
    "MQTT messages by kind (verdict, alert, status, publisher) and outcome "
    "(published = acknowledged by the broker, dropped = oldest out of a full queue, "
    "duplicate = a second verdict for a part, not sent, invalid = refused by the client)",
    ["kind", "outcome"],
)
MQTT_QUEUED = Gauge("linewatch_mqtt_queued", "MQTT messages queued or awaiting the broker's ack")
MQTT_CONNECTED = Gauge("linewatch_mqtt_connected", "1 while the MQTT publisher is connected")
MQTT_CONNECT_FAILURES = Counter(
    "linewatch_mqtt_connect_failures_total",
    "MQTT connection attempts that failed (unreachable, or the broker's refusal reason)",
    ["reason"],
)
LAST_LOOP = Gauge("linewatch_last_loop_timestamp_seconds", "When the worker loop last ran")


def mark_alive() -> None:
    LAST_LOOP.set(time.time())


def healthy() -> bool:
    return time.time() - LAST_LOOP._value.get() < HEALTHY_WITHIN_S  # noqa: SLF001


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            ok = healthy()
            self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep scrapes out of the worker log
        pass


def serve(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on `port` from a daemon thread."""
    mark_alive()
    server = ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
