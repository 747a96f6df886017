"""A model folder's searched gallery: the exported `gallery.npz` (its `Gallery:`
section, settings.py, names it) plus the reviewed additions in `gallery-reviews.npz`,
appended by `linewatch gallery add` (never by an export, so the trained gallery stays
as exported)."""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np

from linewatch.pipeline.errors import ModelError
from linewatch.pipeline.gallery.settings import GallerySettings
from linewatch.pipeline.gallery.store import Gallery, load_gallery, save_gallery

REVIEWS_FILE = "gallery-reviews.npz"
LOCK_FILE = ".gallery-reviews.lock"


def reviews_path(folder: Path) -> Path:
    return folder / REVIEWS_FILE


def load_reviews(folder: Path, size: int) -> Gallery:
    """The reviewed additions of the folder (empty when none were added yet)."""
    path = reviews_path(folder)
    return load_gallery(path) if path.exists() else Gallery.empty(size)


def load_searched(folder: Path, section: GallerySettings) -> Gallery:
    """The gallery a worker searches: the exported one plus the reviewed additions."""
    trained = load_gallery(folder / section.file)
    _check_size(folder / section.file, trained, section)
    reviewed = load_reviews(folder, section.embedding_size)
    _check_size(reviews_path(folder), reviewed, section)
    return trained.extended(reviewed)


def _check_size(path: Path, gallery: Gallery, section: GallerySettings) -> None:
    if len(gallery) and gallery.size != section.embedding_size:
        raise ModelError(
            f"gallery {path} holds {gallery.size}-d embeddings but inference.yml says "
            f"embedding_size {section.embedding_size}; rebuild it with this model"
        )


def append_reviews(folder: Path, entries: Gallery) -> Gallery:
    """Append the entries whose source the reviews file lacks (written atomically, one
    writer at a time); returns the entries added."""
    path = reviews_path(folder)
    with (folder / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two `gallery add` at once lose nothing
        stored = load_reviews(folder, entries.size)
        known = set(stored.sources.tolist())
        fresh = np.array([source not in known for source in entries.sources.tolist()], bool)
        added = entries.where(fresh) if len(entries) else entries
        if len(added):
            save_gallery(path, stored.extended(added))
    return added
