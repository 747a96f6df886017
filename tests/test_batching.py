"""Dynamic batching: first entry blocks, the fill phase polls (never a short Redis BLOCK)."""

from __future__ import annotations

import time

from linewatch.pipeline.streams.batching import collect_batch


def reader(chunks: list[list[int]], calls: list[int | None]):  # type: ignore[no-untyped-def]
    def read(count: int, block_ms: int | None) -> list[int]:
        calls.append(block_ms)
        return chunks.pop(0)[:count] if chunks else []

    return read


def test_the_fill_phase_never_blocks_in_redis() -> None:
    calls: list[int | None] = []
    batch = collect_batch(reader([[1], [], [2, 3], []], calls), 32, 10, idle_block_ms=500)
    assert batch == [1, 2, 3]
    assert calls[0] == 500 and all(block is None for block in calls[1:])


def test_a_full_batch_returns_at_once() -> None:
    calls: list[int | None] = []
    batch = collect_batch(reader([[1, 2], [3, 4, 5]], calls), 4, 10_000, idle_block_ms=500)
    assert batch == [1, 2, 3, 4] and len(calls) == 2


def test_nothing_waiting_returns_empty_after_the_idle_block() -> None:
    calls: list[int | None] = []
    assert collect_batch(reader([], calls), 8, 20, idle_block_ms=500) == []
    assert calls == [500]


def test_the_window_can_follow_the_first_entries() -> None:
    """A batch whose first entries are files fills for longer (their latency does not
    matter); a live one keeps the short window."""

    def slow_reader(calls: list[int | None]):  # type: ignore[no-untyped-def]
        def read(count: int, block_ms: int | None) -> list[str]:
            calls.append(block_ms)
            return ["file"] if len(calls) == 1 else []

        return read

    def window(first: list[str]) -> int:
        return 60 if first == ["file"] else 5

    started = time.monotonic()
    batch = collect_batch(slow_reader([]), 8, 5, idle_block_ms=500, window_ms=window)
    assert batch == ["file"] and time.monotonic() - started >= 0.06
