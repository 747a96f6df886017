"""The entries a reviewed part brings to the gallery: its evidence crop, its mirror
image and their quarter turns (8 views; a defect looks like itself turned or mirrored).
Measured with `bench/few_shot_variants.py` (MODEL_CARD "Gallery"): with 10 reviewed
parts of a class the gallery has never seen, 1-NN recall of that class 0.54 with the 8
views against 0.49 with the crop alone, and no more good photos labelled with it.

Each entry's source is the part's source with `#<view>`; `part_source` undoes it (and
leaves sources from before this, which have no suffix, as they are).
"""

from __future__ import annotations

import numpy as np

REVIEW_VIEWS = 8


def dihedral_views(image: np.ndarray) -> list[np.ndarray]:
    """The image, its mirror image and the quarter turns of both (HxW or HxWxC)."""
    return [np.ascontiguousarray(np.rot90(v, k)) for v in (image, image[:, ::-1]) for k in range(4)]


def entry_source(part: str, view: int) -> str:
    return f"{part}#{view}"


def part_source(entry: str) -> str:
    """The reviewed part an entry came from (`review:cam/9#3` -> `review:cam/9`)."""
    part, _, view = entry.rpartition("#")
    return part if part and view.isdigit() else entry
