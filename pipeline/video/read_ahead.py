"""Decode a file ahead of its reader, in a thread of its own.

PyAV decodes and converts frames without holding the GIL, and OpenCV locates, crops
and encodes without it too, so a file's next frames can be decoded on one core while
ingest locates, crops and sends the current ones on the other (a hand-written loop does
one after the other). Errors reach the reader in order, after the frames before them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
OFFER_WAIT_S = 0.1  # a full queue is retried this often, so a closed reader is noticed


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_END = object()


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """`items` produced by a thread, up to `depth` ahead of the caller; `depth` 0: as is.
    Closing the result (a reader that stops early) stops the thread and closes `items`."""
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue[object] = queue.Queue(depth)
    closed = threading.Event()
    thread = threading.Thread(
        target=_produce, args=(items, slots, closed), name="read-ahead", daemon=True
    )
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        closed.set()
        thread.join()


def _produce(items: Iterator[object], slots: queue.Queue[object], closed: threading.Event) -> None:
    try:
        for item in items:
            if not _offer(slots, item, closed):
                return
        _offer(slots, _END, closed)
    except BaseException as exc:  # handed to the reader, raised there
        _offer(slots, _Failure(exc), closed)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a generator's `finally` (the container's close) runs in this thread


def _offer(slots: queue.Queue[object], item: object, closed: threading.Event) -> bool:
    while not closed.is_set():
        try:
            slots.put(item, timeout=OFFER_WAIT_S)
            return True
        except queue.Full:
            continue
    return False
