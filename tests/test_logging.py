"""Worker logs: JSON lines carrying worker and camera ids, URL passwords never written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from linewatch.pipeline.redact import redact_text
from tests.support.services import linewatch, wait_for


def test_ingest_worker_writes_json_lines_with_worker_and_camera(
    video: Path,
    redis_url: str,
    line_name: str,
    tmp_path: Path,
) -> None:
    config = tmp_path / "line.yaml"
    config.write_text(f"cameras:\n  - id: press-cam\n    url: {video}\n")
    env = {
        "LINEWATCH_LOG_FORMAT": "json",
        "LINEWATCH_REDIS_URL": redis_url,
        "LINEWATCH_LINE": line_name,
    }
    done = linewatch("worker", "ingest", "--config", str(config), "--camera", "press-cam", env=env)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert records, "the worker logged"
    assert {r["camera"] for r in records} == {"press-cam"}
    assert all(r["worker"].startswith("ingest:press-cam:") for r in records)
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any("decoded 12, sent 12" in r["message"] for r in records)


def test_an_unreachable_camera_is_logged_without_its_password(
    redis_url: str, line_name: str, tmp_path: Path
) -> None:
    config = tmp_path / "line.yaml"
    config.write_text(
        "cameras:\n  - id: cam1\n    url: rtsp://admin:hunter2@127.0.0.1:9/stream\n"
        "ingest:\n  open_timeout_s: 1\n"
    )
    log = tmp_path / "worker.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env = {**clean, "LINEWATCH_REDIS_URL": redis_url, "LINEWATCH_LINE": line_name}
    command = [sys.executable, "-m", "linewatch.cli", "worker", "ingest"]
    with log.open("w") as err:
        worker = subprocess.Popen(
            [*command, "--config", str(config), "--camera", "cam1"], stderr=err, env=env
        )
        try:
            wait_for(lambda: "reconnecting" in log.read_text(), 60)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    output = log.read_text()
    assert "hunter2" not in output
    assert "rtsp://admin:***@127.0.0.1:9" in output


def test_redact_text_masks_every_url_password() -> None:
    line = "rtsp://u:p@h/x failed; db postgresql+psycopg://lw:pw@db:5432/x?password=s"
    assert redact_text(line) == (
        "rtsp://u:***@h/x failed; db postgresql+psycopg://lw:***@db:5432/x?password=***"
    )
    assert redact_text("no secrets at 10:30 in http://host/path") == (
        "no secrets at 10:30 in http://host/path"
    )
