"""The running model's gallery in an inference worker, reloaded without a restart.

A model folder with a `Gallery:` section (pipeline/gallery/folder.py) gets each view's
embedding (the graph's second output, from the same predictor call as the class
probabilities) searched against `gallery.npz` + `gallery-reviews.npz`. `linewatch
gallery add` appends to the reviews file and bumps the model version's revision in
Redis (`lw:gallery:<line>`, a hash of version -> revision); every worker reads that
revision between batches (at most every `defaults.MODEL_POLL_S`, as it reads the
model switch) and reloads the gallery when it moved. A gallery that fails to load is
logged with the reason and the previous one stays (none for a newly switched model,
whose results then carry no novelty, as a model without a gallery).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linewatch.pipeline import defaults, keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.errors import LinewatchError, ModelError
from linewatch.pipeline.gallery.folder import load_searched
from linewatch.pipeline.gallery.search import Matches, search
from linewatch.pipeline.gallery.settings import GallerySettings
from linewatch.pipeline.gallery.store import Gallery
from linewatch.pipeline.inference.classifier import Classifier, ModelInfo
from linewatch.pipeline.inference.detector import DetectorInfo
from linewatch.pipeline.inference.loading import Model, describe_model
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)


def revision_key(settings: Settings) -> str:
    return keys.gallery(settings.line)


def bump_revision(client: broker.Client, settings: Settings, version: str) -> int:
    """Tell the line's workers that model `version`'s gallery changed; the new revision."""
    return int(client.hincrby(revision_key(settings), version, 1))


def read_revision(client: broker.Client, settings: Settings, version: str) -> int:
    value = client.hget(revision_key(settings), version)
    return int(value) if value else 0


@dataclass(frozen=True)
class LineGallery:
    """A loaded gallery with the section it was exported with."""

    folder: Path
    section: GallerySettings
    gallery: Gallery
    revision: int

    def search(self, embeddings: np.ndarray) -> Matches:
        return search(self.gallery, embeddings, self.section.neighbours)

    def flags(
        self, novelty: float, label: str, known: tuple[str, ...], threshold: float | None
    ) -> bool:
        """Whether a view may make its part NG by the gallery (its crop is then kept as
        evidence): novel enough on its own (`threshold`: the line's, else the section's),
        or nearest to a class the classifier lacks."""
        limit = self.section.novelty_threshold if threshold is None else threshold
        return novelty >= limit or label not in known


def gallery_settings_of(info: ModelInfo | DetectorInfo) -> GallerySettings | None:
    """A model's `Gallery:` section; None for a model without a gallery (detectors)."""
    return info.gallery if isinstance(info, ModelInfo) else None


def load_line_gallery(folder: Path, section: GallerySettings, revision: int = 0) -> LineGallery:
    """The folder's searched gallery; a ModelError when a file of it is broken."""
    return LineGallery(folder, section, load_searched(folder, section), revision)


class GalleryFollower:
    """Holds the gallery of the model the worker runs; reloads it when the worker runs
    another model folder or the model version's gallery revision moves (then with the
    folder's `Gallery:` section read again: its threshold may have changed too)."""

    def __init__(self, revision: Callable[[str], int]) -> None:
        self._revision = revision  # model version -> its gallery revision in Redis
        self._folder: Path | None = None
        self._version = ""
        self._gallery: LineGallery | None = None
        self._section: GallerySettings | None = None
        self._seen = 0
        self._last_poll = 0.0

    def current(self, folder: Path, info: ModelInfo | DetectorInfo) -> LineGallery | None:
        """The gallery for the next batch of the model `info` describes, in `folder`."""
        if folder != self._folder or info.version != self._version:
            self._folder, self._version, self._gallery = folder, info.version, None
            self._section = gallery_settings_of(info)
            if self._section is None:
                return None
            self._seen = self._poll_revision()
            self._load(self._seen)
        elif self._section is None:
            return None
        elif time.monotonic() - self._last_poll >= defaults.MODEL_POLL_S:
            revision = self._poll_revision()
            if revision != self._seen:
                self._seen = revision
                self._section = self._section_on_disk() or self._section
                self._load(revision)
        return self._gallery

    def _section_on_disk(self) -> GallerySettings | None:
        """The folder's `Gallery:` section as written now (`gallery build` rewrites the
        file and the threshold); None when the folder cannot be read or has none."""
        assert self._folder is not None
        try:
            return gallery_settings_of(describe_model(self._folder))
        except ModelError as exc:
            log.warning("Gallery section of %s not read again (%s); keeping it", self._folder, exc)
            return None

    def _poll_revision(self) -> int:
        self._last_poll = time.monotonic()
        try:
            return self._revision(self._version)
        except broker.RedisError as exc:
            log.warning("cannot read the gallery revision (%s); keeping the gallery", exc)
            return self._seen

    def _load(self, revision: int) -> None:
        assert self._folder is not None and self._section is not None
        try:
            gallery = load_line_gallery(self._folder, self._section, revision)
        except LinewatchError as exc:
            log.error("gallery of %s not loaded (%s); keeping the previous", self._folder, exc)
            return
        log.info(
            "gallery of %s revision %d: %d entries %s",
            self._folder,
            revision,
            len(gallery.gallery),
            gallery.gallery.counts(),
        )
        self._gallery = gallery


def embed(model: Model, images: Sequence[np.ndarray]) -> np.ndarray:
    """The views' embeddings [N, D] under `model` (one predictor call per batch); a
    ModelError when its graph has no embedding output."""
    embeddings = None
    if isinstance(model, Classifier) and model.embedding_size is not None:
        embeddings = model.predict_with_embeddings(images)[1]
    if embeddings is None:
        raise ModelError(
            f"model {model.info.name} {model.info.version} has no embedding output; export "
            "it with a gallery (`linewatch export`) to search or grow a gallery"
        )
    return embeddings
