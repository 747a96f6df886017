"""PyAV decoding of real files and a real RTSP server (GStreamer)."""

import multiprocessing
import time
from pathlib import Path

import av
import numpy as np
import pytest

from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.source import (
    SourceEnded,
    SourceError,
    SourceOptions,
    SourceStalled,
    is_live,
    open_frames,
)
from linewatch.pipeline.video_writer import write_video

WIDTH, HEIGHT, BITS = 160, 120, 8


def numbered_frame(number: int) -> np.ndarray:
    """A frame whose number is written as 8 black/white stripes (survives H.264)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    stripe = WIDTH // BITS
    for bit in range(BITS):
        if number >> bit & 1:
            image[:, bit * stripe : (bit + 1) * stripe] = 255
    return image


def read_number(image: np.ndarray) -> int:
    stripe = image.shape[1] // BITS
    means = [image[:, b * stripe + 3 : (b + 1) * stripe - 3].mean() for b in range(BITS)]
    return sum(1 << bit for bit, mean in enumerate(means) if mean > 128)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "numbers.mp4"
    return write_video(path, (numbered_frame(i) for i in range(64)), fps=16)


def test_file_frames_arrive_in_order(video: Path) -> None:
    frames = list(open_frames(str(video), SourceOptions()))
    assert [read_number(f.image) for f in frames] == list(range(64))
    assert [f.index for f in frames] == list(range(64))
    assert frames[1].pts == pytest.approx(1 / 16, abs=1e-3)
    assert frames[0].image.shape == (HEIGHT, WIDTH, 3)


def test_fps_sampling_keeps_every_fourth_frame(video: Path) -> None:
    frames = list(open_frames(str(video), SourceOptions(target_fps=4)))
    assert [read_number(f.image) for f in frames] == list(range(0, 64, 4))


def test_roi_and_resize(video: Path) -> None:
    options = SourceOptions(roi=(20, 10, 100, 80), resize=(50, 40))
    frame = next(open_frames(str(video), options))
    assert frame.image.shape == (40, 50, 3)


def test_truncated_file_yields_what_decodes(video: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.mp4"
    data = video.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    try:
        numbers = [read_number(f.image) for f in open_frames(str(truncated), SourceOptions())]
    except SourceError as exc:  # moov atom at the end: nothing decodable, said clearly
        assert str(truncated) in str(exc)
        return
    assert numbers == list(range(len(numbers))) and 0 < len(numbers) < 64


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p / "missing.mp4", "not found"),
        (
            lambda p: (p / "empty.mp4").write_bytes(b"") and p / "empty.mp4" or p / "empty.mp4",
            "empty",
        ),
        (lambda p: (p / "text.mp4").write_text("hello\n" * 50) and p / "text.mp4", "cannot open"),
        (lambda p: p, "not a file"),
        (lambda p: audio_only(p / "audio.m4a"), "no video stream"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(SourceError, match=reason) as info:
        list(open_frames(str(path), SourceOptions()))
    assert str(path) in str(info.value)


def test_redact_and_live_detection() -> None:
    assert redact_url("rtsp://op:s3cret@cam/x") == "rtsp://op:***@cam/x"
    assert is_live("rtsp://cam/x") and is_live("RTSPS://cam") and not is_live("/v/a.mp4")


def live_options(**overrides: float) -> SourceOptions:
    return SourceOptions(**{"open_timeout_s": 5.0, "read_timeout_s": 2.0, **overrides})


@pytest.mark.slow
def test_rtsp_frames_arrive_in_order_then_the_stream_ends(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    numbers = []
    with pytest.raises(SourceEnded):
        for frame in open_frames(server.url, live_options()):
            numbers.append(read_number(frame.image))
    assert len(numbers) >= 60 and numbers == sorted(numbers)
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_rtsp_stall_is_detected_without_hanging(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    frames = open_frames(server.url, live_options(read_timeout_s=1.5))
    for _ in range(5):
        next(frames)
    server.pause()
    started = time.monotonic()
    with pytest.raises(SourceStalled, match="127.0.0.1"):
        for _ in frames:
            pass
    assert time.monotonic() - started < 10
    assert multiprocessing.active_children() == []


def test_unreachable_rtsp_server_fails_fast() -> None:
    from linewatch.pipeline.redis_server import free_port

    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot open stream"):
        next(open_frames(f"rtsp://127.0.0.1:{free_port()}/cam1", live_options()))
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_rtsp_wrong_password_is_named_without_the_secret(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video, user="op", password="right")
    wrong = server.url.replace("op:right@", "op:wrong-secret@")
    with pytest.raises(SourceError) as info:
        next(open_frames(wrong, live_options()))
    assert "op:***@" in str(info.value) and "wrong-secret" not in str(info.value)
    first = next(open_frames(server.url, live_options()))
    assert first.image.shape == (HEIGHT, WIDTH, 3)


@pytest.mark.slow
def test_closing_the_generator_stops_the_decoder(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    frames = open_frames(server.url, live_options())
    next(frames)
    assert len(multiprocessing.active_children()) == 1
    frames.close()
    assert multiprocessing.active_children() == []
