"""Growing the running model's gallery from reviews, without retraining
(`linewatch gallery add --from-reviews`, the dashboard's button), and what it holds
(`linewatch gallery show`).

The reviewed parts' evidence crops are embedded with the running model, each as 8
entries (the crop, its mirror image and their quarter turns: pipeline/gallery/views.py),
and appended to `gallery-reviews.npz` in its folder (the exported `gallery.npz` stays as exported);
then the model version's gallery revision is bumped in Redis and every inference worker
reloads the gallery between batches (pipeline/inference/gallery.py). A class a reviewer
named that the classifier does not know makes the next parts nearest to it NG with that
label (pipeline/decide/gallery_rule.py); the classifier's own labels change only with
the next training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import Engine

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.gallery.folder import append_reviews, load_reviews, reviews_path
from linewatch.pipeline.gallery.settings import GallerySettings
from linewatch.pipeline.gallery.store import Gallery, load_gallery
from linewatch.pipeline.gallery.views import (
    REVIEW_VIEWS,
    dihedral_views,
    entry_source,
    part_source,
)
from linewatch.pipeline.inference.gallery import embed, gallery_settings_of
from linewatch.pipeline.inference.loading import Model, describe_model
from linewatch.pipeline.storage.review_export import ReviewedCrop, reviewed_crops


@dataclass(frozen=True)
class Added:
    """What `add_from_reviews` did."""

    added: dict[str, int]  # reviewed parts added per label (each REVIEW_VIEWS entries)
    already: int  # reviewed parts already in the gallery
    without_crop: int  # reviewed parts without an evidence crop (nothing to embed)
    undecodable: int  # crops that do not decode as images
    revision: int | None  # the gallery revision workers reload to (None: no Redis)
    reviews_file: Path = field(default=Path())

    def summary(self) -> str:
        added = ", ".join(f"{label} {n}" for label, n in self.added.items()) or "nothing"
        reload = (
            f"workers reload the gallery (revision {self.revision})"
            if self.revision is not None
            else "no Redis: restart the inference workers to reload it"
        )
        no_crop = f"{self.without_crop} have no crop"
        if self.without_crop:
            no_crop += " (a passed part keeps one when sampled: inference.passed_crops_every)"
        return (
            f"added {added} to {self.reviews_file}; {self.already} reviewed parts were "
            f"already in it, {no_crop}, {self.undecodable} did not decode; {reload}"
        )


def gallery_section(folder: Path) -> GallerySettings:
    """The folder's gallery section; a LinewatchError when the model has none."""
    section = gallery_settings_of(describe_model(folder))
    if section is None:
        raise LinewatchError(
            f"model {folder} has no gallery (no Gallery section in its inference.yml); "
            "export it with a gallery (`linewatch export`) and switch to it"
        )
    return section


def add_from_reviews(
    *,
    engine: Engine,
    folder: Path,
    model: Model,
    since: datetime | None = None,
    label: str | None = None,
    bump: Callable[[str], int] | None = None,
) -> Added:
    """Embed the reviewed parts not in the gallery yet with `model` (the one in `folder`)
    and append them to its reviews file; `bump(version)` then tells the workers."""
    section = gallery_section(folder)
    crops = _unique(reviewed_crops(engine, since, label))
    stored = load_reviews(folder, section.embedding_size).sources.tolist()
    known = {part_source(source) for source in stored}
    todo = [c for c in crops if c.evidence and c.source not in known]
    images, kept = _decode(todo)
    added = Gallery.empty(section.embedding_size)
    if images:
        views = [view for image in images for view in dihedral_views(image)]
        entries = Gallery.of(
            embed(model, views),
            [c.label for c in kept for _ in range(REVIEW_VIEWS)],
            [entry_source(c.source, v) for c in kept for v in range(REVIEW_VIEWS)],
        )
        added = append_reviews(folder, entries)
    revision = bump(model.info.version) if bump is not None and len(added) else None
    return Added(
        added=parts_per_label(added),
        already=sum(1 for c in crops if c.source in known),
        without_crop=sum(1 for c in crops if not c.evidence),
        undecodable=len(todo) - len(kept),
        revision=revision,
        reviews_file=reviews_path(folder),
    )


def _unique(crops: list[ReviewedCrop]) -> list[ReviewedCrop]:
    """One crop per part (a part judged by two model versions has two reviewed rows)."""
    by_source: dict[str, ReviewedCrop] = {}
    for crop in crops:
        if crop.evidence or crop.source not in by_source:
            by_source[crop.source] = crop
    return list(by_source.values())


def _decode(crops: list[ReviewedCrop]) -> tuple[list[np.ndarray], list[ReviewedCrop]]:
    """RGB images of the crops that decode, and those crops."""
    images, kept = [], []
    for crop in crops:
        decoded = cv2.imdecode(np.frombuffer(crop.evidence or b"", np.uint8), cv2.IMREAD_COLOR)
        if decoded is not None:
            images.append(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
            kept.append(crop)
    return images, kept


@dataclass(frozen=True)
class Contents:
    """`linewatch gallery show`: entries per class, trained (exported) and reviewed."""

    section: GallerySettings
    trained: dict[str, int]
    reviewed: dict[str, int]

    def rows(self) -> list[tuple[str, int, int]]:
        labels = sorted({*self.trained, *self.reviewed})
        return [(lb, self.trained.get(lb, 0), self.reviewed.get(lb, 0)) for lb in labels]


def gallery_contents(folder: Path) -> Contents:
    section = gallery_section(folder)
    trained = load_gallery(folder / section.file)
    reviewed = load_reviews(folder, section.embedding_size)
    return Contents(section, trained.counts(), parts_per_label(reviewed))


def parts_per_label(reviewed: Gallery) -> dict[str, int]:
    """Reviewed parts per class, largest first (a part's entries count once)."""
    labels, sources = reviewed.labels.tolist(), reviewed.sources.tolist()
    parts = {(label, part_source(source)) for label, source in zip(labels, sources, strict=True)}
    return dict(Counter(label for label, _ in parts).most_common())
