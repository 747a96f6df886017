"""/v1/classify: the line's model, through the inference worker's own code path
(`load_model` → `Preprocessor.batch` → predictor → `prediction.predictions`); each
photo is judged as uploaded and as the line would cut it (pipeline/inference/uploads.py).

The model is loaded once, on first use (or at start-up by `serve`), and follows the
line's `linewatch model use` switch: the requested folder is checked at most every
few seconds. One predictor per process, so calls into it are serialised."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from linewatch.pipeline.config import Settings
from linewatch.pipeline.inference.explain import heat_map_jpeg
from linewatch.pipeline.inference.loading import Model, describe_model, load_model
from linewatch.pipeline.inference.prediction import Prediction
from linewatch.pipeline.inference.uploads import predict_uploads

log = logging.getLogger(__name__)

POLL_S = 5.0
T = TypeVar("T")


class ModelHolder:
    """The loaded model, reloaded when the line's requested model folder changes."""

    def __init__(
        self,
        settings: Settings,
        running: Callable[[], Path] | None = None,
        loader: Callable[[Path], Model] | None = None,
    ) -> None:
        self._settings = settings
        self._running = running or (lambda: settings.inference.model_dir)
        self._loader = loader or self._load
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._folder: Path | None = None
        self._checked = 0.0

    def folder(self) -> Path:
        """The folder the line runs now (switching.running_model_dir)."""
        try:
            return self._running()
        except Exception as exc:  # Redis down: keep the model we have
            log.warning("cannot read the line's running model (%s); keeping the current", exc)
            return self._folder or self._settings.inference.model_dir

    def info(self) -> Any:
        """Name, version, labels and threshold, without loading paddle."""
        if self._model is not None:
            return self._model.info
        return describe_model(self.folder())

    def _load(self, folder: Path) -> Model:
        inference = self._settings.inference
        model = load_model(folder, self._settings.api.threads, inference.device, False, 16)
        model.warm_up()
        return model

    def _current(self) -> Model:
        now = time.monotonic()
        if self._model is None or now - self._checked >= POLL_S:
            self._checked = now
            folder = self.folder()
            if self._model is None or folder != self._folder:
                log.info("classify: loading model %s", folder)
                self._model, self._folder = self._loader(folder), folder
        assert self._model is not None
        return self._model

    def predict(self, images: Sequence[np.ndarray]) -> tuple[Model, list[Prediction | None]]:
        with self._lock:
            model = self._current()
            return model, predict_uploads(model, images)

    def using(self, work: Callable[[Model, Path], T]) -> T:
        """`work(model, its folder)` with the current model, serialised like predict."""
        with self._lock:
            model = self._current()
            assert self._folder is not None
            return work(model, self._folder)

    def heat_map(self, jpeg: bytes) -> tuple[Model, bytes]:
        """The occlusion heat overlay (JPEG) of an evidence crop under the current model."""
        with self._lock:
            model = self._current()
            return model, heat_map_jpeg(model, jpeg)[0]


def answer(model: Model, prediction: Prediction | None, filename: str) -> dict[str, Any]:
    info = model.info
    base = {
        "file": filename,
        "threshold": info.defect_threshold,
        "model_name": info.name,
        "model_version": info.version,
    }
    if prediction is None:
        return {**base, "error": "the model returned non-finite scores for this image"}
    return {
        **base,
        "label": prediction.label,
        "score": prediction.score,
        "is_defect": prediction.is_defect,
        "topk": [{"label": label, "score": score} for label, score in prediction.topk],
    }
