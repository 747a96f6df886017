"""Dynamic batching: wait for a first entry, then fill up to max_batch or max_wait_ms."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Read = Callable[[int, "int | None"], list[T]]


def collect_batch(read: Read[T], max_batch: int, max_wait_ms: int, idle_block_ms: int) -> list[T]:
    """Entries from `read(count, block_ms)`: blocks up to `idle_block_ms` for the first one,
    then keeps reading until `max_batch` entries or `max_wait_ms` after the first arrived."""
    batch = read(max_batch, idle_block_ms)
    if not batch:
        return batch
    deadline = time.monotonic() + max_wait_ms / 1000
    while len(batch) < max_batch:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        batch.extend(read(max_batch - len(batch), left_ms))
    return batch
