"""Which model folder a line runs, switched without stopping its workers.

`linewatch model use DIR` records the folder in Redis (`lw:model:<line>`);
`running_model_dir` is the one answer to "which model does this line run now" (that
request, else `inference.model_dir`), asked by ingest (view size and crop margin),
inference, the sink (labels and threshold) and the API. Every
inference worker polls it between batches; when it changes, the worker
loads and warms the new model in a background thread while it keeps inferring
with the old one, then swaps at a batch boundary. No frame waits for the load and
none is dropped; each result row names the model version that produced it. A
folder that fails to load is logged with the reason and the old model stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from linewatch.pipeline import defaults, keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)

M = TypeVar("M")


def model_key(settings: Settings) -> str:
    return keys.model(settings.line)


def use_model(client: broker.Client, settings: Settings, model_dir: Path) -> None:
    """Ask every inference worker of the line to switch to `model_dir`."""
    client.hset(
        model_key(settings),
        mapping={"model_dir": str(model_dir.resolve()), "requested_ts": time.time_ns()},
    )


def requested_model_dir(client: broker.Client, settings: Settings) -> Path | None:
    """The folder `linewatch model use` asked for, if any."""
    value = client.hget(model_key(settings), "model_dir")
    return Path(value.decode()) if value else None


def running_model_dir(client: broker.Client | None, settings: Settings) -> Path:
    """The model folder this line runs now: the requested one, else the configured one."""
    requested = requested_model_dir(client, settings) if client is not None else None
    return requested or settings.inference.model_dir


class ModelSwitcher(Generic[M]):
    """Holds the running model and swaps in the requested one once it is loaded."""

    def __init__(
        self,
        model: M,
        model_dir: Path,
        load: Callable[[Path], M],
        running: Callable[[], Path],
    ) -> None:
        self.model, self.model_dir = model, model_dir.resolve()
        self._load, self._running = load, running
        self._last_poll = 0.0
        self._loading: Path | None = None
        self._failed: Path | None = None
        self._ready: tuple[M, Path] | None = None
        self._lock = threading.Lock()

    def current(self) -> M:
        """The model for the next batch: the new one as soon as it is loaded and warm."""
        with self._lock:
            if self._ready is not None:
                (self.model, self.model_dir), self._ready = self._ready, None
                self._loading = None
                log.info("switched to model %s", self.model_dir)
        if time.monotonic() - self._last_poll >= defaults.MODEL_POLL_S:
            self._last_poll = time.monotonic()
            self._poll()
        return self.model

    def _poll(self) -> None:
        wanted = self._running()
        if wanted in (self.model_dir, self._loading, self._failed):
            return
        self._loading = wanted
        log.info("loading model %s (still inferring with %s)", wanted, self.model_dir)
        threading.Thread(target=self._load_in_background, args=(wanted,), daemon=True).start()

    def _load_in_background(self, folder: Path) -> None:
        try:
            model = self._load(folder)
        except Exception as exc:  # noqa: BLE001 (any load failure keeps the old model)
            log.error("model %s not loaded (%s); keeping %s", folder, exc, self.model_dir)
            with self._lock:
                self._failed, self._loading = folder, None
            return
        with self._lock:
            self._ready = (model, folder)
