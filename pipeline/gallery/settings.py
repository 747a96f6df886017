"""The `Gallery:` section of a model's inference.yml: which file, its embedding size, and
the novelty threshold (with how it was chosen) that makes a part `unknown`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from linewatch.pipeline.gallery.store import GALLERY_FILE


@dataclass(frozen=True)
class GallerySettings:
    file: str  # beside inference.pdmodel
    embedding_size: int  # D, the graph's second output
    neighbours: int  # k for the label vote
    novelty_threshold: float  # a part is `unknown` when its part novelty >= this
    top_views: int  # the part novelty aggregation the threshold was chosen with
    novelty_from: str  # how the threshold was chosen (documentation)
    entries: int  # rows of the exported gallery file


def gallery_settings(config: dict[str, Any]) -> GallerySettings | None:
    """The parsed `Gallery` section of an inference.yml dict, or None without one.
    Raises ValueError naming the key that is missing or out of range."""
    section = config.get("Gallery")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ValueError(f"Gallery must be a mapping, got {section!r}")
    settings = GallerySettings(
        file=str(section.get("file", GALLERY_FILE)),
        embedding_size=int(section["embedding_size"]),
        neighbours=int(section.get("neighbours", 1)),
        novelty_threshold=float(section["novelty_threshold"]),
        top_views=int(section.get("top_views", 1)),
        novelty_from=str(section.get("novelty_from", "")),
        entries=int(section.get("entries", 0)),
    )
    if settings.embedding_size < 1 or settings.neighbours < 1 or settings.top_views < 1:
        raise ValueError(
            f"Gallery embedding_size, neighbours and top_views must be >= 1, got {section}"
        )
    if not 0.0 <= settings.novelty_threshold <= 2.0:
        raise ValueError(
            f"Gallery novelty_threshold {settings.novelty_threshold} is not a cosine "
            "distance (0..2); re-export the model"
        )
    if "/" in settings.file or settings.file.startswith("."):
        raise ValueError(f"Gallery file {settings.file!r} must be a file name in the model folder")
    return settings
