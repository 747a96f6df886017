"""Builders shared by tests (test modules import these, never each other)."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from linewatch.pipeline.config import DEFAULT_MODEL_DIR, Settings, load_settings
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.simulation.synthetic import NORMAL_LABEL
from linewatch.pipeline.streams.embedded_redis import find_redis_server, free_port
from linewatch.pipeline.video.codec import encode_image
from linewatch.schemas.messages import Box, FrameMessage, PartEndMessage, PartView, ResultMessage
from linewatch.schemas.tables import Detection, DetectionBox, Part
from linewatch.workers import sink

# Numbered test videos: each frame carries its number as BITS black/white stripes.
WIDTH, HEIGHT, BITS = 160, 120, 8


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


def count_detections(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Detection)) or 0)


def frame_boxes(engine: Engine, camera_id: str, seq: int, model_version: str) -> list[Box]:
    """A stored frame's boxes, best first."""
    with Session(engine) as session:
        rows = session.scalars(
            select(DetectionBox)
            .join(Detection, Detection.id == DetectionBox.detection_id)
            .where(
                Detection.camera_id == camera_id,
                Detection.seq == seq,
                Detection.model_version == model_version,
            )
            .order_by(DetectionBox.box_index)
        ).all()
    return [Box(r.label, r.score, r.x1, r.y1, r.x2, r.y2) for r in rows]


def assert_clean_error(run: subprocess.CompletedProcess, *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("linewatch: error: ")
    for needle in needles:
        assert needle in last, last


def defect_runs(truth: list[str]) -> list[tuple[int, int, str]]:
    """(first seq, last seq, label) of each run of defective frames; seq = frame index + 1."""
    runs: list[tuple[int, int, str]] = []
    for index, label in enumerate(truth):
        seq = index + 1
        if label == NORMAL_LABEL:
            continue
        if runs and runs[-1][1] == seq - 1 and runs[-1][2] == label:
            runs[-1] = (runs[-1][0], seq, label)
        else:
            runs.append((seq, seq, label))
    return runs


RESULT = ResultMessage(
    camera_id="cam-1",
    seq=7,
    pts=0.7,
    status="ok",
    model_name="m",
    model_version="v1",
    label="crack",
    score=0.9,
    topk=(("crack", 0.9), ("free", 0.1)),
    is_defect=True,
    capture_ts=1,
    ingest_ts=2,
    dequeue_ts=3,
    infer_start_ts=4,
    infer_end_ts=5,
    worker_id="w",
    evidence=b"jpg",
)


FRAME = FrameMessage(
    camera_id="cam-1",
    seq=7,
    pts=0.5,
    capture_ts=10,
    ingest_ts=11,
    width=4,
    height=2,
    encoding="jpeg",
    image=b"\xff\xd8bytes",
    live=True,
)


def read_number(image: np.ndarray) -> int:
    stripe = image.shape[1] // BITS
    means = [image[:, b * stripe + 3 : (b + 1) * stripe - 3].mean() for b in range(BITS)]
    return sum(1 << bit for bit, mean in enumerate(means) if mean > 128)


def numbered_frame(number: int) -> np.ndarray:
    """A frame whose number is written as 8 black/white stripes (survives H.264)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    stripe = WIDTH // BITS
    for bit in range(BITS):
        if number >> bit & 1:
            image[:, bit * stripe : (bit + 1) * stripe] = 255
    return image


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


def frame(seq: int) -> dict[bytes, bytes]:
    image = np.full((120, 160, 3), 128, np.uint8)
    now = time.time_ns()
    message = FrameMessage("cam", seq, seq / 10, now, now, 160, 120, "jpeg", b"", False)
    return FrameMessage(**{**message.__dict__, "image": encode_image(image, "jpeg")}).encode()


def copy_with_version(tmp_path: Path, version: str) -> Path:
    folder = tmp_path / f"model-{version}"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Global"]["model_version"] = version
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    return folder


def result(seq: int, label: str = "free", version: str = "v1") -> ResultMessage:
    return ResultMessage(
        camera_id="cam",
        seq=seq,
        pts=seq / 10,
        status="ok",
        model_name="m",
        model_version=version,
        label=label,
        score=0.8,
        topk=((label, 0.8),),
        is_defect=label != "free",
        capture_ts=seq * 10**9,
        ingest_ts=0,
        dequeue_ts=0,
        infer_start_ts=0,
        infer_end_ts=0,
        worker_id="w",
    )


NS = 1_000_000_000


def view_result(
    part_id: int,
    view_index: int,
    seq: int,
    topk: tuple[tuple[str, float], ...],
    *,
    camera_id: str = "cam",
    status: str = "ok",
    version: str = "v1",
    capture_ts: int | None = None,
    evidence: bytes = b"",
    threshold: float = 0.5,
) -> ResultMessage:
    """The result of one part view, as an inference worker sends it (labels `free` normal)."""
    label, score = topk[0] if topk else ("", 0.0)
    defect = 1.0 - dict(topk).get("free", 0.0) >= threshold if status == "ok" else False
    box = PartView(part_id, view_index, 10 * view_index, 20, 10 * view_index + 100, 140)
    return ResultMessage(
        camera_id=camera_id,
        seq=seq,
        pts=seq / 10,
        status=status,
        model_name="m",
        model_version=version,
        label=label,
        score=score,
        topk=topk,
        is_defect=defect,
        capture_ts=capture_ts if capture_ts is not None else seq * NS,
        ingest_ts=0,
        dequeue_ts=0,
        infer_start_ts=0,
        infer_end_ts=0,
        worker_id="w",
        evidence=evidence if defect else b"",
        view=box,
    )


def part_end(
    part_id: int,
    views_sent: int,
    first_seq: int,
    last_seq: int,
    *,
    camera_id: str = "cam",
    ended_ts: int | None = None,
    reason: str = "left",
) -> PartEndMessage:
    """A part end as ingest adds it to the results stream (ended now unless given)."""
    return PartEndMessage(
        camera_id=camera_id,
        part_id=part_id,
        views_sent=views_sent,
        first_seq=first_seq,
        last_seq=last_seq,
        first_pts=first_seq / 10,
        last_pts=last_seq / 10,
        first_capture_ts=first_seq * NS,
        last_capture_ts=last_seq * NS,
        ended_ts=ended_ts if ended_ts is not None else time.time_ns(),
        reason=reason,
    )


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


def part_row(
    camera_id: str,
    part_id: int,
    captured_at: datetime,
    verdict: str,
    label: str,
    model_version: str = "v1",
    late: bool = False,
) -> dict[str, object]:
    """A `parts` row as the sink writes it (times derived from `captured_at`, UTC)."""
    ts = int(captured_at.timestamp() * 1e9)
    return {
        "camera_id": camera_id,
        "part_id": part_id,
        "first_seq": part_id * 10,
        "last_seq": part_id * 10 + 4,
        "first_pts": 0.0,
        "last_pts": 0.4,
        "first_capture_ts": ts,
        "last_capture_ts": ts + 400_000_000,
        "captured_at": captured_at,
        "views_sent": 3,
        "views_inferred": 0 if verdict == "uninspected" else 3,
        "verdict": verdict,
        "label": label,
        "score": 0.9 if verdict == "defect" else 0.1,
        "class_scores": "{}",
        "model_version": model_version,
        "end_reason": "left",
        "decided_ts": ts + (3_000_000_000 if late else 600_000_000),
        "deadline_ts": ts + 2_000_000_000,
        "late": late,
    }


def write_parts(engine: Engine, rows: Iterable[dict[str, object]]) -> None:
    """Insert `parts` rows (from part_row) in one transaction."""
    with engine.begin() as connection:
        connection.execute(Part.__table__.insert(), list(rows))


CHROMIUM = Path("/usr/bin/chromium")
PLOT_TAG = r'<img[^>]+src="data:image/png;base64,([^"]+)"[^>]*>'


def plot_images(page: str) -> list[np.ndarray]:
    """The report's inline PNG plots, decoded (BGR)."""
    import base64
    import re

    import cv2

    images = []
    for data in re.findall(PLOT_TAG, page):
        raw = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
        images.append(cv2.imdecode(raw, cv2.IMREAD_COLOR))
    return images


def coloured(image: np.ndarray) -> int:
    """Pixels of the plotted data (matplotlib's blue and orange), not of axes or text."""
    blue, _green, red = (image[..., i].astype(int) for i in range(3))
    return int((abs(blue - red) > 80).sum())


def screenshot(page: Path, shot: Path, width: int = 1200, height: int = 2400) -> np.ndarray:
    """A headless Chromium screenshot of a local page (BGR)."""
    import cv2

    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = cv2.imread(str(shot))
    assert image is not None and image.shape == (height, width, 3)
    return image


def each_plot_in_chromium(page: str, folder: Path) -> list[int]:
    """Chromium renders each plot of a report page alone (the page's own <head>, one
    <img>): the coloured pixels of each screenshot, in page order."""
    import re

    head = page[: page.index("<body")] if "<body" in page else ""
    counts = []
    for index, tag in enumerate(re.finditer(PLOT_TAG, page)):
        single = folder / f"plot-{index}.html"
        single.write_text(f"{head}<body>{tag.group(0)}</body></html>")
        counts.append(coloured(screenshot(single, folder / f"plot-{index}.png", 1000, 700)))
    return counts


def require_chromium() -> None:
    """Skip (fail under CI) when the browser the plot checks need is missing."""
    import pytest

    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is absent (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
