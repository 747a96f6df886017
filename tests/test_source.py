"""PyAV decoding of real files and a real RTSP server (GStreamer); no mocks."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from linewatch.pipeline.streams.embedded_redis import free_port
from linewatch.pipeline.video.source import (
    FpsSampler,
    SourceEnded,
    SourceError,
    SourceOptions,
    SourceStalled,
    is_live,
    open_frames,
    redact_url,
)
from linewatch.pipeline.video.video_writer import write_video
from tests.support.builders import HEIGHT, WIDTH, numbered_frame, read_number

FPS, COUNT = 16, 64


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "numbers.mp4"
    return write_video(path, (numbered_frame(i) for i in range(COUNT)), fps=FPS)


def process_gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":  # dead, not reaped
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


# --- files -----------------------------------------------------------------------------


def test_file_frames_arrive_in_order(video: Path) -> None:
    frames = list(open_frames(str(video), SourceOptions()))
    assert [read_number(f.image) for f in frames] == list(range(COUNT))
    assert [f.index for f in frames] == list(range(COUNT))
    assert frames[1].pts == pytest.approx(1 / FPS, abs=1e-3)
    assert frames[0].image.shape == (HEIGHT, WIDTH, 3) and frames[0].image.dtype == np.uint8
    assert 0 < frames[0].capture_ts <= time.time_ns()


def test_file_url(video: Path) -> None:
    frames = list(open_frames(f"file://{video}", SourceOptions()))
    assert [read_number(f.image) for f in frames] == list(range(COUNT))


def test_fps_sampling_keeps_every_fourth_frame(video: Path) -> None:
    frames = list(open_frames(str(video), SourceOptions(target_fps=4)))
    assert [read_number(f.image) for f in frames] == list(range(0, COUNT, 4))
    assert [f.index for f in frames] == list(range(COUNT // 4))


def test_fps_sampling_never_upsamples(video: Path) -> None:
    assert len(list(open_frames(str(video), SourceOptions(target_fps=100)))) == COUNT


def test_sampler_tolerates_jitter_and_clock_resets() -> None:
    sampler = FpsSampler(5)
    jittery = [i / 25 + (0.004 if i % 2 else -0.004) for i in range(1, 250)]
    assert sum(sampler.keep(pts) for pts in jittery) == pytest.approx(50, abs=1)
    assert sampler.keep(0.0)  # the camera clock went back: sampling restarts, not a long gap
    assert not sampler.keep(0.04) and sampler.keep(0.2)


def test_sampler_places_an_untimed_first_frame() -> None:
    sampler = FpsSampler(4, source_fps=16)  # RTSP: the first frame has no pts
    kept = [i for i in range(17) if sampler.keep(-1.0 if i == 0 else i / 16)]
    assert kept == [0, 4, 8, 12, 16]
    untimed = FpsSampler(4)
    assert all(untimed.keep(-1.0) for _ in range(10))  # no timestamps at all: nothing to sample by


def test_roi_and_resize(video: Path) -> None:
    options = SourceOptions(roi=(20, 10, 100, 80), resize=(50, 40))
    frame = next(open_frames(str(video), options))
    assert frame.image.shape == (40, 50, 3) and frame.image.flags.c_contiguous


def test_roi_outside_the_frame_is_named(video: Path) -> None:
    with pytest.raises(SourceError, match=r"roi .* does not fit the 160x120 frames"):
        next(open_frames(str(video), SourceOptions(roi=(100, 0, 100, 50))))


def test_truncated_file_yields_what_decodes(
    video: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truncated = tmp_path / "cut.mp4"
    data = video.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING, "linewatch.pipeline.video.source"):
        numbers = [read_number(f.image) for f in open_frames(str(truncated), SourceOptions())]
    assert numbers == list(range(len(numbers))) and 0 < len(numbers) < COUNT
    assert "truncated" in caplog.text and str(truncated) in caplog.text


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), np.float32)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_header_only(path: Path, video: Path) -> Path:
    return write_bytes(path, video.read_bytes()[:100])


BAD_FILES: dict[str, Callable[[Path, Path], Path]] = {
    "not found": lambda tmp, _: tmp / "missing.mp4",
    "empty": lambda tmp, _: write_bytes(tmp / "empty.mp4", b""),
    "cannot open video file": lambda tmp, _: write_bytes(tmp / "text.mp4", b"hello\n" * 50),
    "truncated": lambda tmp, v: write_header_only(tmp / "head.mp4", v),
    "not a file": lambda tmp, _: tmp,
    "no video stream": lambda tmp, _: write_audio_only(tmp / "audio.m4a"),
}


@pytest.mark.parametrize("reason", list(BAD_FILES))
def test_bad_files_are_named(tmp_path: Path, video: Path, reason: str) -> None:
    path = BAD_FILES[reason](tmp_path, video)
    with pytest.raises(SourceError, match=reason) as info:
        list(open_frames(str(path), SourceOptions()))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def run_unprivileged(check: Callable[[], None]) -> None:
    """Run `check` as user nobody in a forked child when we are root (CI is), else here."""
    if os.geteuid() != 0:
        check()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        try:
            os.setgid(65534)
            os.setuid(65534)
            check()
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0, "the unprivileged check failed"


def test_unreadable_file_is_named(video: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lw-perm-"))  # outside tmp_path: nobody may enter
    try:
        folder.chmod(0o755)
        locked = write_bytes(folder / "locked.mp4", video.read_bytes())
        locked.chmod(0)

        def check() -> None:
            with pytest.raises(SourceError, match=f"video file {locked} is not readable"):
                open_frames(str(locked), SourceOptions())

        run_unprivileged(check)
    finally:
        shutil.rmtree(folder)


def test_redact_and_live_detection() -> None:
    assert redact_url("rtsp://op:s3cret@cam/x") == "rtsp://op:***@cam/x"
    assert redact_url("rtsp://cam:554/x") == "rtsp://cam:554/x"
    assert is_live("rtsp://cam/x") and is_live("RTSPS://cam") and is_live("https://h/s.m3u8")
    assert not is_live("/v/a.mp4") and not is_live("file:///v/a.mp4")


def test_writer_refuses_odd_sizes_and_no_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((121, 160, 3), np.uint8)], fps=10)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "none.mp4", [], fps=10)


# --- live (RTSP) -------------------------------------------------------------------------


def live_options(**overrides: float) -> SourceOptions:
    return SourceOptions(**{"open_timeout_s": 5.0, "read_timeout_s": 2.0, **overrides})


def test_unreachable_rtsp_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot open stream rtsp://op:\\*\\*\\*@127.0.0.1"):
        next(open_frames(f"rtsp://op:pw@127.0.0.1:{free_port()}/cam1", live_options()))
    assert time.monotonic() - started < 10
    assert multiprocessing.active_children() == []


def test_a_server_that_never_answers_fails_within_the_open_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never speaks RTSP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam1"
        started = time.monotonic()
        with pytest.raises(SourceError, match="127.0.0.1"):
            next(open_frames(url, live_options(open_timeout_s=1.5)))
    assert time.monotonic() - started < 1.5 + 2.0 + 5.0  # open + read + the decoder's start


@pytest.mark.slow
def test_rtsp_frames_arrive_in_order_then_the_stream_ends(rtsp_server, video: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    frames = []
    with caplog.at_level(logging.WARNING), pytest.raises(SourceEnded, match="ended"):
        for frame in open_frames(server.url, live_options()):
            frames.append(frame)
    numbers = [read_number(f.image) for f in frames]
    # a live decoder drops what a slow reader (a loaded machine) leaves in its queue,
    # and says so: every frame is either delivered or reported dropped
    dropped = sum(int(m.group(1)) for m in re.finditer(r"dropped (\d+) frames", caplog.text))
    assert len(numbers) + dropped >= COUNT - 4, (len(numbers), dropped)
    assert numbers == sorted(set(numbers))
    assert [f.index for f in frames] == list(range(len(frames)))
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_rtsp_sampling_roi_and_second_mount(rtsp_server, video: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = write_video(tmp_path / "other.mp4", (numbered_frame(200) for _ in range(16)), FPS)
    server = rtsp_server(video, mounts={"/cam2": other})
    first = next(open_frames(server.url_for("/cam2"), live_options()))
    assert read_number(first.image) == 200
    options = live_options(target_fps=4, resize=(80, 60))
    frames = open_frames(server.url, options)
    sampled = [next(frames) for _ in range(4)]
    frames.close()
    assert [read_number(f.image) for f in sampled] == [0, 4, 8, 12]
    assert sampled[0].image.shape == (60, 80, 3)


@pytest.mark.slow
def test_rtsp_missing_mount_is_named(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    with pytest.raises(SourceError, match="cannot open stream .*/nope"):
        next(open_frames(server.url_for("/nope"), live_options()))


@pytest.mark.slow
def test_rtsp_roi_error_is_reported_not_taken_for_a_stall(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    started = time.monotonic()
    with pytest.raises(SourceError, match="does not fit") as info:
        next(open_frames(server.url, live_options(read_timeout_s=30, roi=(0, 0, 999, 10))))
    assert not isinstance(info.value, SourceStalled) and time.monotonic() - started < 10


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
    assert time.monotonic() - started < 1.5 + 3
    assert multiprocessing.active_children() == []
    server.resume()  # the camera is back: a new open reads again
    assert read_number(next(open_frames(server.url, live_options())).image) == 0


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
def test_a_slow_reader_gets_fresh_frames_not_a_backlog(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    frames = open_frames(server.url, live_options())
    first = next(frames)
    time.sleep(2.0)  # 32 frames arrive meanwhile; the decoder keeps only a few
    rest = [next(frames) for _ in range(12)]
    frames.close()
    numbers = [read_number(f.image) for f in [first, *rest]]
    assert numbers == sorted(set(numbers)) and numbers[-1] > 12 + 8
    assert [f.index for f in [first, *rest]] == list(range(13))


@pytest.mark.slow
def test_closing_or_dropping_the_generator_stops_the_decoder(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    frames = open_frames(server.url, live_options())
    next(frames)
    (child,) = multiprocessing.active_children()
    frames.close()
    assert multiprocessing.active_children() == [] and process_gone(child.pid)

    abandoned = open_frames(server.url, live_options())
    next(abandoned)
    (child,) = multiprocessing.active_children()
    del abandoned
    gc.collect()
    assert multiprocessing.active_children() == [] and process_gone(child.pid)


READER = """
import multiprocessing, sys
from linewatch.pipeline.video.source import SourceOptions, open_frames
frames = open_frames(sys.argv[1], SourceOptions(open_timeout_s=5, read_timeout_s=2))
next(frames)
print(multiprocessing.active_children()[0].pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_killed_reader_leaves_no_orphan_decoder(rtsp_server, video: Path) -> None:  # type: ignore[no-untyped-def]
    server = rtsp_server(video)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its resource tracker reports the queue it left behind
    )
    try:
        decoder_pid = int(reader.stdout.readline())  # type: ignore[union-attr]
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait(5)
    assert process_gone(decoder_pid)
