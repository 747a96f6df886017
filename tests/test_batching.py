"""Dynamic batching: first entry blocks, the fill phase polls (never a short Redis BLOCK)."""

from __future__ import annotations

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
