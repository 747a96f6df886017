"""The gallery file: labelled, L2-normalised view embeddings in one `.npz` beside a model.

Arrays: `embeddings` float32 [M, D] (rows of unit length), `labels` str [M] (a class
name per entry), `sources` str [M] (where the entry came from, e.g. `train:<photo>` or
`review:<camera>/<part id>`). Written atomically, so a worker never reads half a file.
"""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linewatch.pipeline.errors import ModelError

GALLERY_FILE = "gallery.npz"
ARRAYS = ("embeddings", "labels", "sources")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Gallery:
    embeddings: np.ndarray  # [M, D] float32, unit rows
    labels: np.ndarray  # [M] str
    sources: np.ndarray  # [M] str

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2:
            raise ValueError(
                f"gallery embeddings must be [entries, size], got {self.embeddings.shape}"
            )
        if not len(self.labels) == len(self.sources) == len(self.embeddings):
            raise ValueError(
                f"gallery arrays disagree: {len(self.embeddings)} embeddings, "
                f"{len(self.labels)} labels, {len(self.sources)} sources"
            )

    @classmethod
    def of(cls, embeddings: np.ndarray, labels: list[str], sources: list[str]) -> Gallery:
        """A gallery of these entries, the embeddings normalised."""
        return cls(normalise(embeddings), np.asarray(labels, str), np.asarray(sources, str))

    @classmethod
    def empty(cls, size: int) -> Gallery:
        return cls(np.zeros((0, size), np.float32), np.zeros(0, str), np.zeros(0, str))

    @property
    def size(self) -> int:
        """Embedding size D."""
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.embeddings)

    def counts(self) -> dict[str, int]:
        """Entries per class, largest first."""
        return dict(Counter(self.labels.tolist()).most_common())

    def extended(self, other: Gallery) -> Gallery:
        if len(other) and other.size != self.size:
            raise ValueError(f"cannot add {other.size}-d embeddings to a {self.size}-d gallery")
        return Gallery(
            np.concatenate([self.embeddings, other.embeddings]),
            np.concatenate([self.labels, other.labels]),
            np.concatenate([self.sources, other.sources]),
        )

    def where(self, keep: np.ndarray) -> Gallery:
        """The entries where the boolean mask `keep` is true."""
        return Gallery(self.embeddings[keep], self.labels[keep], self.sources[keep])


def save_gallery(path: Path, gallery: Gallery) -> None:
    """Write `path` atomically (a temporary file renamed over it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as out:
        np.savez(
            out,
            embeddings=gallery.embeddings.astype(np.float32),
            labels=gallery.labels.astype(str),
            sources=gallery.sources.astype(str),
        )
    os.replace(temporary, path)


def load_gallery(path: Path) -> Gallery:
    """The gallery in `path`; a ModelError names the file and what is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [name for name in ARRAYS if name not in arrays.files]
            if missing:
                raise ModelError(
                    f"gallery {path} has no {', '.join(missing)} array; rebuild it with "
                    "`linewatch export` (or restore the model folder's copy)"
                )
            return Gallery(
                arrays["embeddings"].astype(np.float32),
                arrays["labels"].astype(str),
                arrays["sources"].astype(str),
            )
    except FileNotFoundError as exc:
        raise ModelError(f"gallery {path} does not exist") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"gallery {path} cannot be read ({exc}); rebuild it or restore it"
        ) from exc
