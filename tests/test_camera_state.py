"""Per-camera state machine: transitions checked, recorded in a real Redis, driven by
real file and RTSP ingest."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.streams import broker
from linewatch.pipeline.video import camera_state
from linewatch.pipeline.video.camera_state import (
    CameraState,
    CameraStateMachine,
    InvalidTransition,
    redis_recorder,
)
from linewatch.pipeline.video.source import SourceError
from linewatch.pipeline.video.video_writer import write_video
from linewatch.workers import ingest
from tests.support.builders import make_settings, numbered_frame
from tests.support.services import wait_for

FRAMES, FPS = 160, 16  # 10 s: long enough to stall mid-stream


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("states") / "numbers.mp4"
    return write_video(path, (numbered_frame(i) for i in range(FRAMES)), fps=FPS)


def transitions(client: broker.Client, settings, camera_id: str = "cam1") -> list[str]:  # type: ignore[no-untyped-def]
    key = settings.camera_key(camera_id, "states")
    return [entry["to"] for entry in camera_state.history(client, key, 100)]


def test_only_allowed_transitions_are_taken(redis_client, redis_url, tmp_path, line_name) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, line_name, redis_url)
    history_key = settings.camera_key("cam1", "states")
    ingest_key = settings.camera_key("cam1", "ingest")
    machine = CameraStateMachine(
        "cam1", [redis_recorder(redis_client, history_key, ingest_key, StopFlag().wait)]
    )
    with pytest.raises(InvalidTransition, match="start -> streaming"):
        machine.enter(CameraState.STREAMING)
    machine.enter(CameraState.CONNECTING, "rtsp://10.0.0.5/s1")
    machine.enter(CameraState.CONNECTING)  # already there: not recorded again
    machine.enter(CameraState.BACKOFF, "refused")
    with pytest.raises(InvalidTransition, match="backoff -> stalled"):
        machine.enter(CameraState.STALLED)
    machine.enter(CameraState.STOPPED, "shutdown")
    with pytest.raises(InvalidTransition):
        machine.enter(CameraState.CONNECTING)

    history = camera_state.history(redis_client, history_key)
    assert [(h["from"], h["to"], h["reason"]) for h in history] == [
        ("", "connecting", "rtsp://10.0.0.5/s1"),
        ("connecting", "backoff", "refused"),
        ("backoff", "stopped", "shutdown"),
    ]
    assert all(int(h["ts"]) > 0 for h in history)
    assert redis_client.hget(ingest_key, "state") == b"stopped"


def test_a_file_camera_connects_streams_and_stops(
    redis_client, redis_url, tmp_path, line_name, video
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path, line_name, redis_url, cameras=[{"id": "cam1", "url": str(video)}]
    )
    counters = ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    assert counters.sent == FRAMES
    assert transitions(redis_client, settings) == ["connecting", "streaming", "stopped"]
    last = camera_state.history(redis_client, settings.camera_key("cam1", "states"), 1)[0]
    assert last["reason"] == "file read to its end"


def test_a_bad_file_stops_the_camera_with_the_reason(
    redis_client, redis_url, tmp_path, line_name
) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video" * 100)
    settings = make_settings(
        tmp_path, line_name, redis_url, cameras=[{"id": "cam1", "url": str(bad)}]
    )
    with pytest.raises(SourceError):
        ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    history = camera_state.history(redis_client, settings.camera_key("cam1", "states"))
    assert [h["to"] for h in history] == ["connecting", "stopped"]
    assert "garbage.mp4" in history[-1]["reason"]


@pytest.mark.slow
def test_a_stalled_camera_goes_through_stalled_backoff_and_back_to_streaming(
    rtsp_server, redis_client, redis_url, tmp_path, line_name, video
) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        cameras=[{"id": "cam1", "url": server.url}],
        ingest={"read_timeout_s": 1.5, "open_timeout_s": 3, "reconnect_max_s": 1},
    )
    stop = StopFlag()
    worker = threading.Thread(
        target=ingest.run, args=(redis_client, settings.cameras[0], settings, stop)
    )
    worker.start()
    try:
        wait_for(lambda: transitions(redis_client, settings)[-1:] == ["streaming"])
        server.pause()
        wait_for(lambda: "stalled" in transitions(redis_client, settings))
        server.resume()
        wait_for(lambda: transitions(redis_client, settings).count("streaming") >= 2, 60)
    finally:
        server.resume()
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    states = transitions(redis_client, settings)
    start = states.index("stalled")
    assert states[:2] == ["connecting", "streaming"]
    assert states[start : start + 3] == ["stalled", "backoff", "connecting"]
    assert "streaming" in states[start:]
    assert states[-1] == "stopped"
    reasons = camera_state.history(redis_client, settings.camera_key("cam1", "states"))
    assert "delivered no frame" in reasons[start]["reason"]
