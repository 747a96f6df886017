"""A file decoded ahead of its reader by a thread: same frames in the same order, errors
in their place, and a reader that stops early stops the thread and closes the source."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch.demo import write_demo_video
from linewatch.pipeline.video.read_ahead import read_ahead
from linewatch.pipeline.video.source import SourceOptions, open_frames


class Source:
    """A generator of numbers that records the thread it ran in and whether it closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.closed = threading.Event()
        self.threads: set[str] = set()

    def __iter__(self) -> Iterator[int]:
        try:
            for number in range(self.count):
                self.threads.add(threading.current_thread().name)
                if number == self.fail_at:
                    raise ValueError(f"broken at {number}")
                yield number
        finally:
            self.closed.set()


def test_every_item_arrives_in_order_from_another_thread() -> None:
    source = Source(100)
    assert list(read_ahead(iter(source), 4)) == list(range(100))
    assert source.threads == {"read-ahead"} and source.closed.is_set()


def test_depth_zero_reads_in_the_callers_thread() -> None:
    source = Source(5)
    assert list(read_ahead(iter(source), 0)) == list(range(5))
    assert source.threads == {threading.current_thread().name}


def test_an_error_comes_after_the_items_before_it() -> None:
    got: list[int] = []
    with pytest.raises(ValueError, match="broken at 7"):
        for item in read_ahead(iter(Source(20, fail_at=7)), 3):
            got.append(item)
    assert got == list(range(7))


def test_a_reader_that_stops_early_stops_the_thread_and_closes_the_source() -> None:
    source = Source(10_000)
    ahead = read_ahead(iter(source), 2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()
    assert source.closed.wait(5), "the source's finally ran"
    assert not any(t.name == "read-ahead" for t in threading.enumerate())


def test_a_video_decodes_the_same_ahead_as_in_turn(tmp_path: Path) -> None:
    video = tmp_path / "line.mp4"
    write_demo_video(video, 30, fps=10)
    in_turn = list(open_frames(str(video), SourceOptions()))
    ahead = list(read_ahead(open_frames(str(video), SourceOptions()), 8))
    assert [f.pts for f in ahead] == [f.pts for f in in_turn] and len(ahead) == 30
    assert all((a.image == b.image).all() for a, b in zip(ahead, in_turn, strict=True))
