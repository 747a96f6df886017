"""The API on a real uvicorn server: server-sent events from real Redis pub/sub;
`linewatch serve` as a process (binds 127.0.0.1 when no token is configured); the API
started by `linewatch run` (`api.enabled`) and by `linewatch demo --serve`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from linewatch.api.app import ApiContext, build_context, create_app
from linewatch.pipeline import keys
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import free_port
from tests.support.api import (
    AUTH,
    TOKEN,
    insert_part,
    jpeg,
    line_settings,
    line_with_api,
    running_server,
    shared_models,
    tile,
    verdict_for,
    wait_healthy,
)
from tests.support.services import clean_env

VERDICTS = ("ok", "defect", "uninspected")


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
        redis_client.publish(
            settings.outputs.pubsub.verdicts_channel, verdict_for("cam-a", 7).to_json()
        )
        redis_client.publish(
            settings.outputs.pubsub.alerts_channel, json.dumps({"camera_id": "cam-a"})
        )
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
        redis_client.publish(
            context.settings.outputs.pubsub.verdicts_channel, verdict_for("cam-z", 1).to_json()
        )
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
        health = wait_healthy(f"http://127.0.0.1:{port}", process)
        assert health == {"status": "ok", "database": "ok", "redis": "not configured"}
        parts = httpx.get(f"http://127.0.0.1:{port}/v1/parts")  # no token configured: open
        assert parts.status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "listens on 127.0.0.1 only, not 0.0.0.0" in stderr


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
        wait_healthy(f"http://127.0.0.1:{port}", process)
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


def test_linewatch_run_serves_the_api_while_the_line_runs(tmp_path: Path) -> None:
    with line_with_api(tmp_path) as line:
        health = httpx.get(f"{line.url}/healthz").json()
        assert health == {"status": "ok", "database": "ok", "redis": "ok"}  # the run's Redis
        assert httpx.get(f"{line.url}/v1/parts").status_code == 401
        parts = wait_until(
            lambda: httpx.get(f"{line.url}/v1/parts?camera=cam1", headers=AUTH).json()["items"],
            "parts written by the running line",
        )
        cameras = httpx.get(f"{line.url}/v1/cameras", headers=AUTH).json()
        output = line.stop()
    assert parts[0]["camera_id"] == "cam1" and parts[0]["verdict"] in VERDICTS
    (camera,) = cameras["cameras"]
    assert camera["id"] == "cam1" and camera["state"] in ("streaming", "stopped")
    assert "decoded" in output and TOKEN not in output  # the run's summary; no secret
    with pytest.raises(httpx.ConnectError):  # the API stopped with the line
        httpx.get(f"{line.url}/healthz")


def test_demo_serve_shows_the_demo_lines_parts(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "demo.log"
    command = [sys.executable, "-m", "linewatch.cli", "demo", "--parts", "6", "--serve"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--data-dir", str(tmp_path / "demo")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is None and "keeps serving" in log.read_text(), "done")
        wait_healthy(url, process)
        counted = re.search(r"parts counted / in truth\W+(\d+) / \d+", log.read_text())
        assert counted, log.read_text()
        parts = httpx.get(f"{url}/v1/parts?camera=demo-cam&limit=500").json()["items"]
        (camera,) = httpx.get(f"{url}/v1/cameras").json()["cameras"]
        page = httpx.get(f"{url}/")
        with httpx.stream("GET", f"{url}/v1/events", timeout=20) as events:
            wait_subscribed(events.iter_lines())  # the demo's Redis outlives its line
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert len(parts) == int(counted[1]) > 0
    assert camera["id"] == "demo-cam" and camera["parts"] == len(parts)
    assert page.status_code == 200 and 'id="dashboard"' in page.text
    assert code == 0 and "FatalError" not in log.read_text()


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
