"""Several cameras in one ingest process (one thread each), into a real Redis.

A dead camera in the process does not hold up the others; kill -9 of the process loses
and repeats nothing: each camera keeps its own seq and part_id counters in Redis.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from linewatch.line import ingest_groups
from linewatch.pipeline import metrics
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.simulation.moving_line import (
    Belt,
    MovingLineSpec,
    PlacedPart,
    simulate_moving,
)
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import free_port
from linewatch.pipeline.video.video_writer import write_video
from linewatch.schemas.messages import FrameMessage, PartEndMessage, decode_result_entry
from linewatch.workers import ingest
from tests.support.builders import make_settings
from tests.support.services import clean_env, wait_for

LINE = MovingLineSpec(width=320, height=240, part_size=90, frames_to_cross=24, parts=5, seed=2)
PARTS = {"method": "contrast", "min_area": 800}


@pytest.fixture(scope="module")
def moving_line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    ((video, parts_csv, _),) = simulate_moving(tmp_path_factory.mktemp("moving"), LINE)
    with parts_csv.open() as source:
        return video, len(list(csv.DictReader(source)))


@pytest.fixture(scope="module")
def parts_in_view(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two parts in view, barely moving, for the whole 6 s video."""
    spec = MovingLineSpec(width=320, height=240, frames_to_cross=800)
    rng = np.random.default_rng(0)
    parts = [
        PlacedPart(0, "free", make_tile(rng, "free", 80), 170, 60),
        PlacedPart(1, "crack", make_tile(rng, "crack", 80), 40, 100),
    ]
    belt = Belt(spec, rng)
    path = tmp_path_factory.mktemp("still") / "still.mp4"
    return write_video(path, (belt.frame(parts, i) for i in range(60)), spec.fps)


def write_config(tmp_path: Path, redis_url: str, line: str, cameras: list[dict]) -> Path:
    config = tmp_path / "line.yaml"
    settings = {
        "line": line,
        "redis_url": redis_url,
        "data_dir": str(tmp_path),
        "cameras": cameras,
        "ingest": {"open_timeout_s": 1, "reconnect_max_s": 1},
    }
    config.write_text(yaml.safe_dump(settings))
    return config


def start_worker(config: Path, cameras: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "linewatch.cli", "worker", "ingest", "--config", str(config)]
    env = clean_env({"LINEWATCH_LOG_FORMAT": "json"})
    return subprocess.Popen(
        [*command, "--camera", cameras], stderr=log.open("a"), stdout=subprocess.DEVNULL, env=env
    )


def hash_of(client: broker.Client, line: str, camera: str) -> dict[str, str]:
    fields = client.hgetall(f"lw:ingest:{line}:{camera}")
    return {k.decode(): v.decode() for k, v in fields.items()}


def camera_entries(
    client: broker.Client, line: str, camera: str
) -> tuple[list[FrameMessage], list[PartEndMessage]]:
    views = [FrameMessage.decode(f) for _, f in client.xrange(f"lw:frames:{line}")]
    ends = [decode_result_entry(f) for _, f in client.xrange(f"lw:results:{line}")]
    return (
        [v for v in views if v.camera_id == camera],
        [e for e in ends if isinstance(e, PartEndMessage) and e.camera_id == camera],
    )


def stream_ended(ends: list[PartEndMessage]) -> list[PartEndMessage]:
    return [e for e in ends if e.reason == "stream-ended"]


def test_a_dead_camera_does_not_hold_up_the_other_camera_of_its_process(
    moving_line, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    video, parts = moving_line
    cameras = [
        {"id": "dead", "url": f"rtsp://op:hunter2@127.0.0.1:{free_port()}/cam"},
        {"id": "file", "url": str(video), "parts": PARTS},
    ]
    config = write_config(tmp_path, redis_url, line_name, cameras)
    log = tmp_path / "worker.log"
    worker = start_worker(config, "dead,file", log)
    try:
        wait_for(lambda: hash_of(redis_client, line_name, "file").get("done") == "1", 120)
        wait_for(lambda: hash_of(redis_client, line_name, "dead").get("state") == "backoff", 30)
        assert worker.poll() is None, "the dead camera keeps its process (and thread) running"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    assert worker.returncode == 0, log.read_text()[-3000:]
    views, ends = camera_entries(redis_client, line_name, "file")
    assert [(e.part_id, e.views_sent, e.reason) for e in ends] == [
        (i, 4, "left") for i in range(1, parts + 1)
    ]
    assert [v.seq for v in views] == list(range(1, 4 * parts + 1))
    assert hash_of(redis_client, line_name, "file")["parts"] == str(parts)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    by_camera = {r["camera"] for r in records if "reconnecting" in r["message"]}
    assert by_camera == {"dead"}, "a camera thread's lines carry its own camera id"
    assert any(r["camera"] == "file" and "decoded" in r["message"] for r in records)
    assert "hunter2" not in log.read_text()


def test_a_camera_with_bad_input_stops_alone_and_its_error_is_raised_at_the_end(
    moving_line, redis_client, redis_url, line_name, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    video, parts = moving_line
    outside = {"method": "fixed", "rois": [[200, 100, 330, 200]]}  # the frames are 320 wide
    cameras = [
        {"id": "bad", "url": str(video), "parts": outside},
        {"id": "good", "url": str(video), "parts": PARTS},
    ]
    settings = make_settings(tmp_path, line_name, redis_url, cameras=cameras)
    with pytest.raises(LinewatchError, match=r"^camera bad stopped on an error"):
        ingest.run_cameras(redis_client, settings.cameras, settings, StopFlag())
    assert re.search(r"camera bad: parts.rois\[0\] \[200, 100, 330, 200\] lies out", caplog.text)
    _, ends = camera_entries(redis_client, line_name, "good")
    assert [e.part_id for e in ends] == list(range(1, parts + 1))
    assert hash_of(redis_client, line_name, "good")["done"] == "1"
    assert hash_of(redis_client, line_name, "bad")["state"] == "stopped"
    sent = metrics.INGEST_FRAMES.labels("good", "sent")._value.get()  # noqa: SLF001
    assert sent == 4 * parts, "the process's metrics count per camera"


def test_kill_9_of_a_two_camera_process_repeats_no_seq_or_part_id(
    moving_line, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    video, parts = moving_line
    cameras = [
        {"id": cam, "url": str(video), "parts": PARTS, "realtime": True} for cam in ("a", "b")
    ]
    config = write_config(tmp_path, redis_url, line_name, cameras)
    log = tmp_path / "worker.log"
    worker = start_worker(config, "a,b", log)
    sent = lambda cam: int(hash_of(redis_client, line_name, cam).get("parts", 0))  # noqa: E731
    wait_for(lambda: sent("a") >= 1 and sent("b") >= 1, 120)
    os.kill(worker.pid, signal.SIGKILL)  # mid-stream: both cameras have parts open
    worker.wait(30)
    rerun = start_worker(config, "a,b", log)  # the files are read again from the start
    assert rerun.wait(180) == 0, log.read_text()[-3000:]
    for cam in ("a", "b"):
        views, ends = camera_entries(redis_client, line_name, cam)
        seqs = [v.seq for v in views]
        assert seqs == sorted(set(seqs)), f"camera {cam}: a seq sent twice"
        part_ids = [e.part_id for e in ends]
        assert part_ids == sorted(set(part_ids)), f"camera {cam}: a part id reused"
        assert len(ends) >= parts + 1, "the rerun's parts and those ended before the kill"
        by_part = Counter(v.view.part_id for v in views if v.view)
        for end in ends:  # every view of an ended part is in the stream
            assert by_part[end.part_id] == end.views_sent
            mine = [v.seq for v in views if v.view and v.view.part_id == end.part_id]
            assert (min(mine), max(mine)) == (end.first_seq, end.last_seq)


def test_run_groups_cameras_per_process_live_apart_from_files(tmp_path: Path) -> None:
    cameras = [
        {"id": "r1", "url": "rtsp://10.0.0.1/s"},
        {"id": "f1", "url": "/videos/1.mp4"},
        {"id": "r2", "url": "rtsp://10.0.0.2/s"},
        {"id": "f2", "url": "/videos/2.mp4", "realtime": True},
        {"id": "r3", "url": "rtsp://10.0.0.3/s"},
    ]
    settings = make_settings(
        tmp_path, "g", "redis://x", cameras=cameras, ingest={"cameras_per_process": 2}
    )
    assert ingest_groups(settings) == [("r1,r2", True), ("f1,f2", False), ("r3", True)]
    one = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"cameras_per_process": 1})}
    )
    assert [ids for ids, _ in ingest_groups(one)] == ["r1", "f1", "r2", "f2", "r3"]


def test_a_camera_that_drops_mid_part_ends_its_parts_with_the_views_they_have(
    parts_in_view, rtsp_server, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(parts_in_view)
    camera = {"id": "cam", "url": server.url, "parts": {**PARTS, "min_frames": 1}}
    timeouts = {"open_timeout_s": 2, "read_timeout_s": 2, "reconnect_max_s": 1}
    settings = make_settings(tmp_path, line_name, redis_url, cameras=[camera], ingest=timeouts)
    stop = StopFlag()
    worker = threading.Thread(
        target=ingest.run_cameras, args=(redis_client, settings.cameras, settings, stop)
    )
    worker.start()
    try:
        wait_for(lambda: int(hash_of(redis_client, line_name, "cam").get("sent", 0)) >= 4, 60)
        server.stop()  # the camera drops with both parts in view
        wait_for(lambda: stream_ended(camera_entries(redis_client, line_name, "cam")[1]), 60)
    finally:
        stop.set()
        worker.join(60)
    views, ends = camera_entries(redis_client, line_name, "cam")
    # under load an RTSP frame can come damaged and the tracker lose a part before the
    # drop (ended `lost`, seen once in a full run); the parts in view at the drop end
    # `stream-ended`, each part once
    ended = stream_ended(ends)
    assert [e.part_id for e in ended] == sorted(e.part_id for e in ended) and len(ended) >= 1
    assert len({e.part_id for e in ends}) == len(ends), "each part ended once"
    assert ends[-len(ended) :] == ended, "the drop ends the parts still in view, last"
    by_part = Counter(v.view.part_id for v in views if v.view)
    assert [e.views_sent for e in ends] == [by_part[e.part_id] for e in ends]
    assert all(e.views_sent >= 1 for e in ended), "the parts keep the views sent before the drop"
    states = [f[b"to"].decode() for _, f in redis_client.xrange(f"lw:states:{line_name}:cam")]
    assert "backoff" in states
