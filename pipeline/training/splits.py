"""The photos of a training run's split (split.json), for a line simulated with the photos
the model was (or was not) trained on."""

from __future__ import annotations

from pathlib import Path

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.training.data import SYNTHETIC_PREFIX, Split


def split_items(split_file: Path, split: str, root: Path | None) -> list[tuple[str, str]]:
    """(path, label) of one part ("train" or "val") of a training run's split.json, only
    the real photos (inside `root` when given)."""
    if not split_file.is_file():
        raise LinewatchError(f"split file {split_file} not found (a training run's split.json)")
    loaded = Split.load(split_file)
    rows = loaded.val if split == "val" else loaded.train
    photos = [
        (_split_path(item, split_file), loaded.labels[index])
        for item, index in rows
        if not item.startswith(SYNTHETIC_PREFIX)
    ]
    items = [
        (str(path), label)
        for path, label in photos
        if root is None or path.resolve().is_relative_to(root.resolve())
    ]
    if not items:
        where = f" inside {root}" if root else ""
        raise LinewatchError(f"the {split} split of {split_file} has no photos{where}")
    return items


def _split_path(item: str, split_file: Path) -> Path:
    """A split's photo path: relative paths are relative to where the training ran (the
    repository root for the shipped model), so they are looked for from the current
    folder, then from each folder above the split file."""
    path = Path(item)
    if path.is_absolute() or path.exists():
        return path
    for base in split_file.resolve().parents:
        if (base / path).exists():
            return base / path
    return path
