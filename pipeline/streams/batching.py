"""Dynamic batching: wait for a first entry, then fill up to max_batch or max_wait_ms.

The window can depend on the first entries (`window_ms`): the inference worker fills
batches of file views for longer, as their latency does not matter and every predictor
call at a small batch costs the CPU that ingest needs.

The fill phase polls without blocking: Redis checks blocking-command timeouts only
`hz` times a second (10 by default), so a BLOCK of 20 ms can last up to ~100 ms and
would add that to every frame's latency at low load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Read = Callable[[int, "int | None"], list[T]]
POLL_S = 0.002


def collect_batch(
    read: Read[T],
    max_batch: int,
    max_wait_ms: int,
    idle_block_ms: int,
    *,
    window_ms: Callable[[list[T]], int] | None = None,
) -> list[T]:
    """Entries from `read(count, block_ms)`: blocks up to `idle_block_ms` for the first one,
    then keeps reading until `max_batch` entries or `max_wait_ms` after the first arrived
    (`window_ms(first entries)` instead, when given)."""
    batch = read(max_batch, idle_block_ms)
    if not batch:
        return batch
    wait_ms = window_ms(batch) if window_ms else max_wait_ms
    deadline = time.monotonic() + wait_ms / 1000
    while len(batch) < max_batch:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            break
        more = read(max_batch - len(batch), None)
        if more:
            batch.extend(more)
        else:
            time.sleep(min(POLL_S, left_s))
    return batch
