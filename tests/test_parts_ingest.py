"""Ingest in parts mode: generated moving-line videos (PyAV) into a real Redis."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from linewatch.pipeline import defaults
from linewatch.pipeline.config import DEFAULT_MODEL_DIR, ContrastParts, LocatedParts, Settings
from linewatch.pipeline.errors import ConfigError, ModelError
from linewatch.pipeline.inference.classifier import Classifier, read_model_info
from linewatch.pipeline.inference.preprocess import Preprocessor
from linewatch.pipeline.inference.switching import use_model
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.simulation.moving_line import (
    Belt,
    MovingLineSpec,
    PlacedPart,
    simulate_moving,
)
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis
from linewatch.pipeline.video.codec import decode_image
from linewatch.pipeline.video.crop import PixelBox, crop_view
from linewatch.pipeline.video.parts import ModelView, PartViews, make_frame_views
from linewatch.pipeline.video.source import SourceOptions, open_frames
from linewatch.pipeline.video.video_writer import write_video
from linewatch.schemas.messages import (
    FrameMessage,
    PartEndMessage,
    ResultMessage,
    decode_result_entry,
)
from linewatch.workers import ingest
from linewatch.workers.inference import GROUP, FrameBatchHandler
from tests.support.builders import make_settings
from tests.support.services import add_entries

LINE = MovingLineSpec(width=320, height=240, part_size=90, frames_to_cross=24, parts=5, seed=2)
CONTRAST = {"method": "contrast", "min_area": 800}
SIDE = read_model_info(DEFAULT_MODEL_DIR)[1].output_size[0]  # the shipped model's input


@pytest.fixture(scope="module")
def moving_line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("moving")
    ((video, parts_csv, _),) = simulate_moving(out, LINE)
    with parts_csv.open() as source:
        return video, list(csv.DictReader(source))


@pytest.fixture(scope="module")
def two_in_view(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two parts wholly in view from the first frame; the video ends with both in view."""
    spec = MovingLineSpec(width=320, height=240, frames_to_cross=80)
    rng = np.random.default_rng(0)
    parts = [
        PlacedPart(0, "free", make_tile(rng, "free", 80), 170, 60),
        PlacedPart(1, "crack", make_tile(rng, "crack", 80), 40, 100),
    ]
    belt = Belt(spec, rng)
    path = tmp_path_factory.mktemp("two") / "two.mp4"
    return write_video(path, (belt.frame(parts, i) for i in range(6)), spec.fps)


def camera_settings(tmp_path: Path, line: str, redis_url: str, video: Path, **camera) -> Settings:  # type: ignore[no-untyped-def]
    parts = camera.pop("parts", CONTRAST)
    cam = {"id": "cam", "url": str(video), "parts": parts, **camera}
    return make_settings(tmp_path, line, redis_url, cameras=[cam])


def stream(client: broker.Client, settings: Settings) -> tuple[list[FrameMessage], list]:
    views = [FrameMessage.decode(f) for _, f in client.xrange(settings.frames_stream)]
    ends = [decode_result_entry(f) for _, f in client.xrange(settings.results_stream)]
    return views, ends


def test_a_moving_line_gives_views_and_part_ends(
    moving_line, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    video, truth = moving_line
    settings = camera_settings(tmp_path, line_name, redis_url, video)
    counters = ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    views, ends = stream(redis_client, settings)

    assert (counters.sent, counters.parts, len(truth)) == (20, 5, 5)
    assert [v.seq for v in views] == list(range(1, 21)), "one seq per view message"
    assert all(isinstance(end, PartEndMessage) for end in ends)
    assert [(e.part_id, e.views_sent, e.reason) for e in ends] == [
        (i, 4, "left") for i in range(1, 6)
    ]
    by_part = Counter(v.view.part_id for v in views if v.view)
    assert by_part == {i: 4 for i in range(1, 6)}
    for end in ends:
        mine = [v for v in views if v.view and v.view.part_id == end.part_id]
        assert [v.view.view_index for v in mine] == [0, 1, 2, 3]
        assert (end.first_seq, end.last_seq) == (mine[0].seq, mine[-1].seq)
        assert end.first_pts < mine[0].pts and mine[-1].pts < end.last_pts
        assert end.first_capture_ts <= end.last_capture_ts <= end.ended_ts
    for part, end in zip(truth, ends, strict=True):
        fps = LINE.fps
        whole = (int(part["first_whole_frame"]) / fps, int(part["last_whole_frame"]) / fps)
        mine = [v.pts for v in views if v.view and v.view.part_id == end.part_id]
        assert whole[0] - 1e-6 <= min(mine) and max(mine) <= whole[1] + 1e-6, "whole views"
        assert 0 <= end.first_pts - int(part["first_frame"]) / fps <= 2 / fps + 1e-6
    first = views[0]
    assert (first.width, first.height, first.encoding) == (SIDE, SIDE, "jpeg")
    assert decode_image(first.image, "jpeg", SIDE, SIDE).shape == (SIDE, SIDE, 3)


def test_two_parts_in_view_are_two_messages_and_end_with_the_stream(
    two_in_view, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    parts = {**CONTRAST, "min_frames": 1, "view_every": 2}
    settings = camera_settings(tmp_path, line_name, redis_url, two_in_view, parts=parts)
    ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    views, ends = stream(redis_client, settings)
    assert [(v.seq, v.pts, v.view.part_id) for v in views][:2] == [(1, 0.0, 1), (2, 0.0, 2)]
    assert len(views) == 6, "6 frames, every 2nd whole view (the parts stand nearly still)"
    assert [(e.part_id, e.views_sent, e.reason) for e in ends] == [
        (1, 3, "stream-ended"),
        (2, 3, "stream-ended"),
    ]
    left_part = [v.view for v in views if v.view.part_id == 1][0]  # boxes go left to right
    assert abs(left_part.x1 - 40) <= 3 and abs(left_part.y1 - 100) <= 3


def test_part_ids_continue_across_runs_and_a_redis_restart(
    two_in_view, tmp_path: Path, line_name: str
) -> None:
    parts = {**CONTRAST, "min_frames": 1}
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = broker.connect(server.url)
        settings = camera_settings(tmp_path, line_name, server.url, two_in_view, parts=parts)
        for _ in range(2):  # a restarted ingest (a reconnect) takes new ids
            ingest.run(client, settings.cameras[0], settings, StopFlag())
        _, ends = stream(client, settings)
        assert [e.part_id for e in ends] == [1, 2, 3, 4]
        counter = ingest.NumberCounter(client, settings.camera_key("cam", "part_id"), "part id")
        assert [counter.take(1, StopFlag().wait) for _ in range(2)] == [5, 6]
        server.stop()  # no persistence: the counter is gone
        server.start()
        assert counter.take(1, StopFlag().wait) == 7, "re-seeded from the last id used"


def test_a_shedding_live_camera_still_ends_its_parts(
    two_in_view, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    parts = {**CONTRAST, "min_frames": 1}
    settings = camera_settings(tmp_path, line_name, redis_url, two_in_view, parts=parts, live=True)
    settings = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"max_stream_len": 10})}
    )
    filler = [{b"v": b"1", b"filler": b"1"}] * 5  # the backlog is at half the stream bound
    add_entries(redis_client, settings.frames_stream, filler)
    counters = ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    ends = [decode_result_entry(f) for _, f in redis_client.xrange(settings.results_stream)]
    assert (counters.sent, counters.dropped) == (0, 6), "every 2nd of 6 frames, 2 parts"
    assert [(e.part_id, e.views_sent, e.reason) for e in ends] == [
        (1, 0, "stream-ended"),
        (2, 0, "stream-ended"),
    ]


def test_inference_copies_the_view_and_skips_the_resize(
    two_in_view, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = camera_settings(tmp_path, line_name, redis_url, two_in_view)
    ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    views, _ = stream(redis_client, settings)
    broker.ensure_group(redis_client, settings.frames_stream, GROUP)
    delivered = broker.read_group(redis_client, settings.frames_stream, GROUP, "w", 50, None)
    model = Classifier(DEFAULT_MODEL_DIR, threads=1, max_batch=8)
    FrameBatchHandler(redis_client, model, settings, "w").handle(delivered)
    _, entries = stream(redis_client, settings)
    results = [entry for entry in entries if isinstance(entry, ResultMessage)]
    assert {r.status for r in results} == {"ok"}
    assert [(r.seq, r.view) for r in results] == [(v.seq, v.view) for v in views]
    view = decode_image(views[0].image, "jpeg", SIDE, SIDE)
    assert model.preprocessor.image(view) is view, "already at the model's size"


def test_parts_mode_needs_a_model_input_size(
    two_in_view, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = camera_settings(tmp_path, line_name, redis_url, two_in_view)
    empty = settings.model_copy(
        update={"inference": settings.inference.model_copy(update={"model_dir": tmp_path})}
    )
    with pytest.raises(ModelError, match=r"camera cam: parts mode resizes each view .* missing"):
        ingest.run(redis_client, empty.cameras[0], empty, StopFlag())
    folder = tmp_path / "short"
    folder.mkdir()
    config = (DEFAULT_MODEL_DIR / "inference.yml").read_text()
    (folder / "inference.yml").write_text(
        config.replace(f"size:\n      - {SIDE}\n      - {SIDE}", "resize_short: 256")
    )
    for name in ("inference.pdmodel", "inference.pdiparams"):
        (folder / name).symlink_to(DEFAULT_MODEL_DIR / name)
    assert Preprocessor(resize_short=256).resize is None
    with pytest.raises(ModelError, match=r"neither a fixed resize nor a crop"):
        ingest.model_view(folder, "cam")


def test_the_crop_margin_comes_from_the_camera_else_the_model(tmp_path: Path) -> None:
    # The shipped model was trained on line views with a 4 % margin (its inference.yml says so).
    assert ingest.model_view(DEFAULT_MODEL_DIR, "cam") == ModelView((SIDE, SIDE), 0.04)
    folder = tmp_path / "model"
    folder.mkdir()
    config = (DEFAULT_MODEL_DIR / "inference.yml").read_text()
    (folder / "inference.yml").write_text(config + "  crop_margin: 0.04\n")
    for name in ("inference.pdmodel", "inference.pdiparams"):
        (folder / name).symlink_to(DEFAULT_MODEL_DIR / name)
    model = ingest.model_view(folder, "cam")
    assert model == ModelView((SIDE, SIDE), 0.04)

    def margin(settings: LocatedParts, view: ModelView) -> float:
        views = make_frame_views(
            settings, camera_id="cam", model_view=lambda: view, new_part_ids=lambda count: 1
        )
        assert isinstance(views, PartViews)
        return views.margin

    assert margin(ContrastParts(), model) == 0.04
    assert margin(ContrastParts(), ModelView((224, 224))) == 0.0
    assert margin(ContrastParts(crop_margin=0.1), model) == 0.1


def test_a_fixed_roi_outside_the_frame_stops_ingest_with_the_key(
    two_in_view, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    parts = {"method": "fixed", "rois": [[0, 0, 100, 100], [200, 100, 330, 200]]}
    settings = camera_settings(tmp_path, line_name, redis_url, two_in_view, parts=parts)
    with pytest.raises(
        ConfigError, match=r"parts.rois\[1\] \[200, 100, 330, 200\] lies outside the 320x240"
    ):
        ingest.run(redis_client, settings.cameras[0], settings, StopFlag())


def test_frame_mode_sends_every_frame_as_a_one_view_part_at_the_model_size(
    two_in_view, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = camera_settings(tmp_path, line_name, redis_url, two_in_view, parts={})
    counters = ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    views, ends = stream(redis_client, settings)
    assert (counters.sent, counters.parts, len(views), len(ends)) == (6, 6, 6, 6)
    for view, end in zip(views, ends, strict=True):
        assert view.view is not None and view.view.view_index == 0
        box = (view.view.x1, view.view.y1, view.view.x2, view.view.y2)
        assert box == (0, 0, 320, 240), "the whole frame"
        assert (view.width, view.height) == (SIDE, SIDE), "resized at ingest, not at inference"
        assert (end.part_id, end.views_sent, end.reason) == (view.view.part_id, 1, "frame")
        assert end.first_seq == end.last_seq == view.seq
    assert len({v.view.part_id for v in views if v.view}) == 6, "a part per frame"


def _model_folder(tmp_path: Path, side: int, margin: float) -> Path:
    """A copy of the shipped model's folder that asks for `side` px views with `margin`."""
    folder = tmp_path / f"model-{side}"
    folder.mkdir()
    config = (DEFAULT_MODEL_DIR / "inference.yml").read_text()
    config = config.replace(f"size:\n      - {SIDE}\n      - {SIDE}", f"size: [{side}, {side}]")
    (folder / "inference.yml").write_text(
        config.replace("crop_margin: 0.04", f"crop_margin: {margin}")
    )
    for name in ("inference.pdmodel", "inference.pdiparams"):
        (folder / name).symlink_to(DEFAULT_MODEL_DIR / name)
    return folder


def _closest_margin(
    view: FrameMessage, frames: dict[float, np.ndarray], margins: list[float]
) -> float:
    """The crop margin whose cut of the view's frame looks most like the view sent."""
    assert view.view is not None
    sent = decode_image(view.image, "jpeg", view.width, view.height).astype(float)
    box = PixelBox(view.view.x1, view.view.y1, view.view.x2, view.view.y2)
    size = (view.width, view.height)
    cut = lambda m: crop_view(frames[view.pts], box, size=size, margin=m).astype(float)  # noqa: E731
    return min(margins, key=lambda m: float(np.abs(cut(m) - sent).mean()))


def test_model_use_recuts_the_next_parts_with_the_new_size_and_margin(
    moving_line, redis_client, redis_url, line_name, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    video, _ = moving_line
    small = _model_folder(tmp_path, 96, 0.15)
    assert ingest.model_view(small, "cam") == ModelView((96, 96), 0.15)
    monkeypatch.setattr(defaults, "MODEL_POLL_S", 0.0)  # ingest reads the running model each batch
    settings = camera_settings(tmp_path, line_name, redis_url, video)
    settings = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"batch_size": 2})}
    )
    switched_after: list[int] = []  # views sent when `linewatch model use` ran

    def model_use_after_two_parts(counters: ingest.IngestCounters) -> None:
        if counters.parts >= 2 and not switched_after:
            use_model(redis_client, settings, small)
            switched_after.append(counters.sent)

    ingest.run(redis_client, settings.cameras[0], settings, StopFlag(), model_use_after_two_parts)
    views, _ = stream(redis_client, settings)
    cuts: dict[int, set[tuple[int, int]]] = {}
    for view in views:
        assert view.view is not None
        cuts.setdefault(view.view.part_id, set()).add((view.width, view.height))
    assert all(len(sizes) == 1 for sizes in cuts.values()), f"a part mixes two cuts: {cuts}"
    before, after = views[: switched_after[0]], views[switched_after[0] :]
    started_after = {v.view.part_id for v in after} - {v.view.part_id for v in before}
    assert {v.view.part_id for v in before} >= {1, 2} and started_after >= {5}
    assert all(cuts[part] == {(SIDE, SIDE)} for part in (1, 2))
    assert all(cuts[part] == {(96, 96)} for part in started_after)
    frames = {f.pts: f.image for f in open_frames(str(video), SourceOptions())}
    margins = [0.04, 0.15]
    assert _closest_margin(before[0], frames, margins) == 0.04
    new = [v for v in after if v.view.part_id in started_after]
    assert [_closest_margin(v, frames, margins) for v in new] == [0.15] * len(new)
