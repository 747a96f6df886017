"""The API on a real uvicorn server: server-sent events from real Redis pub/sub, and
`linewatch serve` as a process (binds 127.0.0.1 when no token is configured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from linewatch.api.app import ApiContext, build_context, create_app
from linewatch.pipeline import keys
from linewatch.pipeline.streams import broker
from tests.api_helpers import (
    AUTH,
    free_port,
    insert_part,
    jpeg,
    line_settings,
    running_server,
    shared_models,
    tile,
    verdict_for,
)


@pytest.fixture()
def live_api(sqlite_url: str, redis_url: str, line_name: str) -> Iterator[tuple[str, ApiContext]]:
    context = build_context(line_settings(sqlite_url, redis_url, line_name))
    context.models = shared_models()
    with running_server(create_app(context)) as url:
        yield url, context
    context.engine.dispose()


def read_events(lines: Iterator[str], count: int) -> list[tuple[str, dict]]:
    events, kind = [], None
    for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: ") and kind:
            events.append((kind, json.loads(line[len("data: ") :])))
            if len(events) == count:
                return events
    raise AssertionError(f"stream ended after {events}")


def wait_subscribed(lines: Iterator[str]) -> None:
    for line in lines:
        if line == ": subscribed":
            return
    raise AssertionError("the event stream never said it subscribed")


def test_events_deliver_a_published_verdict_with_its_row_and_an_alert(
    live_api: tuple[str, ApiContext], redis_client: broker.Client
) -> None:
    url, context = live_api
    settings = context.settings
    row = insert_part(context.engine, part_id=7, verdict="defect", evidence=jpeg(tile()))
    with httpx.stream("GET", f"{url}/v1/events", headers=AUTH, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        wait_subscribed(lines)
        redis_client.publish(settings.verdicts_channel, verdict_for("cam-a", 7).to_json())
        redis_client.publish(settings.alerts.channel, json.dumps({"camera_id": "cam-a"}))
        (kind, verdict), (alert_kind, alert) = read_events(lines, 2)
    assert kind == "verdict" and verdict["part_id"] == 7 and verdict["verdict"] == "defect"
    assert verdict["id"] == row and verdict["evidence_url"] == f"/v1/parts/{row}/evidence.jpg"
    assert alert_kind == "alert" and alert == {"camera_id": "cam-a"}
    image = httpx.get(f"{url}{verdict['evidence_url']}", headers=AUTH)
    assert image.status_code == 200 and image.content.startswith(b"\xff\xd8")


def test_events_need_the_token(live_api: tuple[str, ApiContext]) -> None:
    url, _ = live_api
    assert httpx.get(f"{url}/v1/events", timeout=5).status_code == 401


def test_a_verdict_not_yet_in_sql_is_still_delivered(
    live_api: tuple[str, ApiContext], redis_client: broker.Client
) -> None:
    url, context = live_api
    with httpx.stream("GET", f"{url}/v1/events", headers=AUTH, timeout=20) as response:
        lines = response.iter_lines()
        wait_subscribed(lines)
        redis_client.publish(context.settings.verdicts_channel, verdict_for("cam-z", 1).to_json())
        ((kind, verdict),) = read_events(lines, 1)
    assert kind == "verdict" and verdict["camera_id"] == "cam-z" and "id" not in verdict


def test_serve_without_a_token_listens_on_loopback_only_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {"database_url": f"sqlite:///{tmp_path / 'lw.db'}", "api": {"host": "0.0.0.0"}}
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    command = [sys.executable, "-m", "linewatch.cli", "serve", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        assert health == {"status": "ok", "database": "ok", "redis": "not configured"}
        parts = httpx.get(f"http://127.0.0.1:{port}/v1/parts")  # no token configured: open
        assert parts.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "listens on 127.0.0.1 only, not 0.0.0.0" in stderr


def _wait_healthy(url: str, process: subprocess.Popen) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"linewatch serve exited {process.returncode}"
        try:
            return httpx.get(url, timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("linewatch serve did not answer /healthz within 60 s")


def test_cameras_show_the_ingest_state_recorded_in_redis(
    live_api: tuple[str, ApiContext], redis_client: broker.Client
) -> None:
    from linewatch.pipeline.video.camera_state import CameraState, redis_recorder

    url, context = live_api
    settings = context.settings
    record = redis_recorder(
        redis_client,
        settings.camera_key("cam-a", keys.STATES),
        settings.camera_key("cam-a", keys.INGEST),
        lambda _s: False,
    )
    record(None, CameraState.CONNECTING, "start")
    record(CameraState.CONNECTING, CameraState.STREAMING, "first frame")
    cameras = httpx.get(f"{url}/v1/cameras", headers=AUTH).json()
    by_id = {c["id"]: c for c in cameras["cameras"]}
    assert by_id["cam-a"]["state"] == "streaming" and by_id["cam-a"]["state_since"]
    assert by_id["cam-b"]["state"] == "not seen" and cameras["backlog"] == 0


def test_serve_never_logs_the_token(tmp_path: Path) -> None:
    port, token = free_port(), "very-secret-token-4711"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env |= {
        "LINEWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'lw.db'}",
        "LINEWATCH_API__TOKEN": token,
        "LINEWATCH_LOG_LEVEL": "DEBUG",
    }
    command = [sys.executable, "-m", "linewatch.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/parts", headers={"Authorization": "Bearer x"}).is_error
        assert httpx.get(
            f"{base}/v1/parts", headers={"Authorization": f"Bearer {token}"}
        ).is_success
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    assert token not in stdout + stderr
    assert "serving the API and dashboard on http://127.0.0.1:" in stderr
