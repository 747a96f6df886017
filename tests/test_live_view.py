"""A camera's live view: ingest keeps its latest frame with the part boxes in a real Redis
(marked stopped when the camera stops); the API draws each box in its part's verdict
colour, as one JPEG and as an MJPEG stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from linewatch.api.app import ApiContext, build_context, create_app
from linewatch.pipeline import keys
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.simulation.moving_line import Belt, MovingLineSpec, PlacedPart
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.streams import broker, preview_store
from linewatch.pipeline.video.preview import VERDICT_COLOURS, Preview, PreviewBox, PreviewSampler
from linewatch.pipeline.video.video_writer import write_video
from linewatch.workers import ingest
from tests.support.api import AUTH, api_settings, insert_part, shared_models
from tests.support.builders import make_settings


@pytest.fixture(scope="module")
def standing_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A part that stands in view to the end of the video."""
    spec = MovingLineSpec(width=320, height=240, frames_to_cross=10**6)
    rng = np.random.default_rng(1)
    part = PlacedPart(0, "free", make_tile(rng, "free", 90), 110, 70)
    belt = Belt(spec, rng)
    path = tmp_path_factory.mktemp("standing") / "standing.mp4"
    return write_video(path, (belt.frame([part], i) for i in range(12)), spec.fps)


def test_ingest_keeps_the_last_frame_with_its_part_marked_stopped(
    tmp_path: Path, redis_client: broker.Client, redis_url: str, line_name: str, standing_part: Path
) -> None:
    camera = {"id": "cam", "url": str(standing_part), "parts": {"method": "contrast"}}
    settings = make_settings(
        tmp_path, line_name, redis_url, cameras=[camera], ingest={"preview_fps": 30}
    )
    ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    fields = preview_store.get(redis_client, settings.camera_key("cam", keys.PREVIEW))
    assert fields is not None
    preview = Preview.decode(fields)
    assert preview.stopped
    ((box, part_id),) = [((b.x1, b.y1, b.x2, b.y2), b.part_id) for b in preview.boxes]
    assert part_id == 1
    assert abs(box[0] - 110) <= 4 and abs(box[1] - 70) <= 4 and abs(box[2] - 200) <= 4
    image = cv2.imdecode(np.frombuffer(preview.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (240, 320)
    assert 0 < redis_client.ttl(settings.camera_key("cam", keys.PREVIEW)) <= 3600


def test_previews_are_taken_at_most_preview_fps_and_downscaled() -> None:
    now = [0.0]
    sampler = PreviewSampler(fps=2, width=320, clock=lambda: now[0])
    frame = np.zeros((540, 960, 3), np.uint8)
    taken = []
    for step in range(10):  # 10 frames over 1 s
        now[0] = step * 0.1
        taken.append(sampler.take(frame, [], 0) is not None)
    assert taken.count(True) == 2
    preview = PreviewSampler(fps=2, width=320).take(frame, [], 0)
    assert preview is not None
    assert cv2.imdecode(np.frombuffer(preview.jpeg, np.uint8), 1).shape[:2] == (180, 320)
    assert PreviewSampler(fps=0, width=320).take(frame, [], 0) is None


@pytest.fixture()
def api(sqlite_url: str, redis_url: str) -> Iterator[tuple[TestClient, ApiContext]]:
    context = build_context(api_settings(sqlite_url, redis_url))
    context.models = shared_models()
    with TestClient(create_app(context)) as client:
        yield client, context
    context.engine.dispose()


BOXES = ((20, 20, 100, 100, 1), (140, 20, 220, 100, 2), (20, 130, 100, 210, 3))


def put_preview(context: ApiContext, camera: str) -> None:
    image = np.full((240, 320, 3), 40, np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    preview = Preview(jpeg.tobytes(), tuple(PreviewBox(*box) for box in BOXES), 1)
    assert context.redis is not None
    key = context.settings.camera_key(camera, keys.PREVIEW)
    preview_store.put(context.redis, key, preview.encode(), 60)


def edge_colour(image: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """Median RGB of the box's left edge (drawn 2 px wide), away from its label."""
    x1, y1, _, y2, _ = box
    return np.median(image[y1 + 15 : y2 - 5, x1 : x1 + 2].reshape(-1, 3), axis=0)


def test_each_box_takes_its_parts_verdict_colour(api: tuple[TestClient, ApiContext]) -> None:
    client, context = api
    camera = f"live-{uuid.uuid4().hex[:8]}"
    put_preview(context, camera)
    insert_part(context.engine, camera_id=camera, part_id=1, verdict="defect", label="crack")
    insert_part(context.engine, camera_id=camera, part_id=2, verdict="ok")
    response = client.get(f"/v1/cameras/{camera}/preview.jpg", headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(response.content, np.uint8), 1), 4)
    for box, verdict in zip(BOXES, ("defect", "ok", "pending"), strict=True):
        colour = edge_colour(image, box)
        assert np.abs(colour - VERDICT_COLOURS[verdict]).max() < 40, (verdict, colour)
    # the part decided after the frame was taken changes colour on the next request
    insert_part(context.engine, camera_id=camera, part_id=3, verdict="uninspected")
    again = client.get(f"/v1/cameras/{camera}/preview.jpg", headers=AUTH)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(again.content, np.uint8), 1), 4)
    assert np.abs(edge_colour(image, BOXES[2]) - VERDICT_COLOURS["uninspected"]).max() < 40


def test_live_mjpeg_streams_frames_and_a_camera_without_a_view_is_404(
    api: tuple[TestClient, ApiContext],
) -> None:
    client, context = api
    camera = f"live-{uuid.uuid4().hex[:8]}"
    missing = client.get(f"/v1/cameras/{camera}/preview.jpg", headers=AUTH)
    assert missing.status_code == 404 and camera in missing.json()["detail"]
    assert client.get(f"/v1/cameras/{camera}/live.mjpg", headers=AUTH).status_code == 404
    put_preview(context, camera)
    with client.stream("GET", f"/v1/cameras/{camera}/live.mjpg", headers=AUTH) as stream:
        assert stream.headers["content-type"].startswith("multipart/x-mixed-replace")
        received = b""
        for chunk in stream.iter_bytes():
            received += chunk
            if received.count(b"--frame\r\n") >= 2:
                break
    first = received.split(b"\r\n\r\n", 1)[1].split(b"\r\n--frame", 1)[0]
    assert cv2.imdecode(np.frombuffer(first, np.uint8), 1).shape[:2] == (240, 320)
    assert client.get(f"/v1/cameras/{camera}/preview.jpg").status_code == 401
