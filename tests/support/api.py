"""Builders shared by the API and dashboard tests (tests/test_api*.py, test_dashboard.py):
settings with a token, the shipped model loaded once, images, parts rows, a real uvicorn
server, `linewatch run` with its API. Test modules import these, never each other."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import uvicorn
import yaml
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from linewatch.api.classify import ModelHolder
from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.streams.embedded_redis import free_port
from linewatch.schemas.messages import PartVerdict
from linewatch.schemas.tables import Part
from tests.support.services import clean_env

TOKEN = "tok-3f9a1c77e2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "linewatch-tile"


def utc_now() -> datetime:
    """Now, per call: a module-level constant would go stale in a long test session."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def api_settings(database_url: str, redis_url: str | None = None, **api: Any) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "database_url": database_url,
            "redis_url": redis_url,
            "line": "apitest",
            "cameras": [{"id": "cam-a", "url": "a.mp4"}, {"id": "cam-b", "url": "b.mp4"}],
            "inference": {"model_dir": str(MODEL_DIR)},
            "api": {"token": TOKEN, "user": "alice", **api},
        },
    )


@functools.cache
def shared_models() -> ModelHolder:
    """One loaded copy of the shipped model for every API and dashboard test."""
    return ModelHolder(api_settings("sqlite://"))


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    return data.tobytes()


def tile(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((size, size, 3), 120, np.uint8)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def insert_part(engine: Engine, **values: Any) -> int:
    """A parts row as the sink writes it; returns its id."""
    part_id = values.pop("part_id")
    captured = values.pop("captured_at", None) or utc_now()
    ts = int(captured.timestamp() * 1e9)
    row = {
        "camera_id": "cam-a",
        "part_id": part_id,
        "first_seq": part_id * 10,
        "last_seq": part_id * 10 + 3,
        "first_pts": 0.0,
        "last_pts": 0.3,
        "first_capture_ts": ts,
        "last_capture_ts": ts,
        "captured_at": captured,
        "views_sent": 4,
        "views_inferred": 4,
        "verdict": "ok",
        "label": "free",
        "score": 0.01,
        "class_scores": json.dumps({"free": 0.99, "crack": 0.01}),
        "model_version": "v1",
        "end_reason": "left",
        "decided_ts": ts,
        "deadline_ts": ts,
        "late": False,
        "x1": 10,
        "y1": 20,
        "x2": 110,
        "y2": 120,
        "evidence": None,
        **values,
    }
    with Session(engine) as session, session.begin():
        part = Part(**row)
        session.add(part)
        session.flush()
        return part.id


@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def line_settings(database_url: str, redis_url: str, line: str) -> Settings:
    base = api_settings(database_url, redis_url)
    pubsub = base.outputs.pubsub.model_copy(update={"alerts_channel": f"lw:alerts:{line}"})
    outputs = base.outputs.model_copy(update={"pubsub": pubsub})
    return base.model_copy(update={"line": line, "outputs": outputs})


def verdict_for(camera: str, part_id: int, verdict: str = "defect") -> PartVerdict:
    now = time.time_ns()
    return PartVerdict(
        camera_id=camera,
        part_id=part_id,
        verdict=verdict,
        label="crack",
        score=0.93,
        model_version="v1",
        first_capture_ts=now,
        last_capture_ts=now,
        decided_ts=now,
        deadline_ts=now,
        views_sent=4,
        views_inferred=4,
    )


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90) -> dict:  # type: ignore[type-arg]
    """The /healthz answer of a server process, once it answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server process exited {process.returncode}"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url}/healthz did not answer within {timeout_s:.0f} s")


@dataclass
class RunningLine:
    url: str  # the API's base URL
    database_url: str
    process: subprocess.Popen  # type: ignore[type-arg]
    log: Path  # its stdout and stderr

    def stop(self) -> str:
        """SIGTERM (finish, then exit 0); returns everything the run printed."""
        if self.process.poll() is None:
            self.process.terminate()
        assert self.process.wait(60) == 0, self.log.read_text()
        return self.log.read_text()


@contextmanager
def line_with_api(tmp_path: Path, parts: int = 40) -> Iterator[RunningLine]:
    """`linewatch run` with `api.enabled` (token TOKEN, user alice) on a moving line that
    is replayed at its frame rate, so the line is still running while a test looks."""
    spec = MovingLineSpec(parts=parts, defect_rate=0.5, seed=3)
    ((video, _, _),) = simulate_moving(tmp_path / "video", spec)
    port, database_url = free_port(), f"sqlite:///{tmp_path / 'lw.db'}"
    camera = {"id": "cam1", "url": str(video), "realtime": True}
    camera["parts"] = {"method": "contrast", "merge_gap": 64}
    config = tmp_path / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "line": "apirun",
                "data_dir": str(tmp_path / "data"),
                "database_url": database_url,
                "cameras": [camera],
                "api": {"enabled": True, "port": port, "user": "alice"},
            }
        )
    )
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "linewatch.cli", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env({"LINEWATCH_API__TOKEN": TOKEN}),
        )
    line = RunningLine(f"http://127.0.0.1:{port}", database_url, process, log)
    try:
        wait_healthy(line.url, process)
        yield line
    finally:
        if process.poll() is None:  # the test failed: stop the line and its workers anyway
            process.terminate()
            process.wait(60)
