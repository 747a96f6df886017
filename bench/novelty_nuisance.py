"""Does the gallery flag a defect class nobody trained for on views as a line cuts them?
Embedding maps compared on a train-embedding run's cached taps (issue 26).

    python bench/novelty_nuisance.py runs/embed

For each defect class X in turn (leave-one-class-out): the map is fitted and the gallery
(4 views of each training photo) filled without X. The novelty threshold is set as
`train-embedding` sets it, for <= 0.5 % false rejects of known training parts cut as a
line shows them (4 wide-jitter views, top-2 mean), each scored by a map and gallery made
without its fold (5 folds). Then the validation photos, cut the same way (4 wide-jitter
views each, their own seed; cached as `RUN/embedding/val_wide_taps.npz`), are parts:
the share of X's parts at or above the threshold (caught as `unknown`), and of the good
(`free`) parts (false rejects).

Maps:
- `total`: whitened on the first K principal axes of all training views (shipped);
- `within-photo`: whitened by the covariance of each view around its photo's mean (what
  belts, scales, light and the locator change; the nuisance), then the K axes along
  which photos differ most in that space (LDA with each photo its own class);
- `nuisance removed`: `total` after projecting out the top N axes of that nuisance.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from linewatch.pipeline.gallery.store import normalise
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.embedding_train import TAPS_FILE, Taps
from linewatch.pipeline.training.gallery_export import photo_line_views, rejecting_threshold
from linewatch.pipeline.training.metrics import part_scores
from linewatch.pipeline.training.static_runner import StaticRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_variants import cached_taps, whitening  # noqa: E402

from linewatch.pipeline.training.teacher import photo_folds

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")
NORMAL = LABELS.index("free")
VIEWS = 4
Map = Callable[[np.ndarray], np.ndarray]


def nuisance(x: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Each view minus its photo's mean view."""
    residual = x.copy()
    order = np.argsort(photo, kind="stable")
    bounds = np.flatnonzero(np.diff(photo[order])) + 1
    for group in np.split(order, bounds):
        residual[group] -= x[group].mean(axis=0)
    return residual


def within_photo(x: np.ndarray, photo: np.ndarray, keep: int, shrinkage: float) -> Map:
    residual = nuisance(x, photo)
    variance, axes = np.linalg.eigh(np.cov(residual, rowvar=False))
    variance = np.clip(variance, 0, None)
    white = axes / np.sqrt(variance + shrinkage * variance.mean())  # nuisance -> unit
    mean = x.mean(axis=0)
    means = np.stack([x[photo == p].mean(axis=0) for p in np.unique(photo)])
    between, directions = np.linalg.eigh(np.cov((means - mean) @ white, rowvar=False))
    projection = white @ directions[:, ::-1][:, :keep]
    return lambda t: normalise((t - mean) @ projection)


def nuisance_removed(x: np.ndarray, photo: np.ndarray, removed: int) -> Map:
    _, axes = np.linalg.eigh(np.cov(nuisance(x, photo), rowvar=False))
    top = axes[:, ::-1][:, :removed]
    project = np.eye(x.shape[1]) - top @ top.T
    inner = whitening(x @ project, 128, 0.01)
    return lambda t: inner(t @ project)


def val_wide_taps(run_dir: Path, size: int = 160) -> np.ndarray:
    """4 wide-jitter line views of each validation photo (their own seed)."""

    def compute(split: data.Split, runner: StaticRunner) -> np.ndarray:
        views = photo_line_views(split.val, size, VIEWS, 104729, line_views.WIDE_JITTER)
        return runner(data.to_batch(views))

    return cached_taps(run_dir, "val_wide_taps.npz", compute)


def novelty(embed: Map, gallery_x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return 1.0 - (embed(queries) @ embed(gallery_x).T).max(axis=1)


def evaluate(
    name: str, fit: Callable[[np.ndarray], Map], taps: Taps, wide: np.ndarray, val_wide: np.ndarray
) -> None:
    """`fit(mask over the training views and their wide views)` -> map. One table row."""
    train_photo = taps.train_photo
    photo_targets = taps.train_targets[taps.views(0, 1)]
    wide_photo = np.repeat(np.arange(len(photo_targets)), VIEWS)
    gallery_views = taps.views(0, VIEWS)
    folds = photo_folds(photo_targets, 5, 0)
    val_photo = np.repeat(np.arange(len(taps.val_targets)), VIEWS)
    caught, cells = [], []
    for left_out in [c for c in range(len(LABELS)) if c != NORMAL]:
        known = taps.train_targets != left_out
        held_out = np.zeros(len(wide), np.float64)
        for k in range(5):
            fold_known = known & (folds[train_photo] != k)
            embed = fit(fold_known)
            queries = folds[wide_photo] == k
            held_out[queries] = novelty(
                embed, taps.train[fold_known & gallery_views], wide[queries]
            )
        parts, part_photo = part_scores(held_out, wide_photo, VIEWS, 2)
        threshold = rejecting_threshold(parts[photo_targets[part_photo] != left_out], 0.005)
        embed = fit(known)
        val_parts, _ = part_scores(
            novelty(embed, taps.train[known & gallery_views], val_wide), val_photo, VIEWS, 2
        )
        mine, free = taps.val_targets == left_out, taps.val_targets == NORMAL
        hits = int((val_parts[mine] >= threshold).sum())
        false = int((val_parts[free] >= threshold).sum())
        caught.append((hits, int(mine.sum()), false))
        cells.append(f"{hits}/{mine.sum()} ({false}, {threshold:.3f})")
    total = sum(c[0] for c in caught), sum(c[1] for c in caught)
    print(f"| {name} | **{total[0]}/{total[1]}** | {' | '.join(cells)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    with np.load(args.run_dir / "embedding" / TAPS_FILE) as stored:
        taps = Taps(**{name: stored[name] for name in Taps.__dataclass_fields__})
    with np.load(args.run_dir / "embedding" / "threshold_taps_wide.npz") as stored:
        wide = stored["features"]
    val_wide = val_wide_taps(args.run_dir)
    x, photo = taps.train, taps.train_photo
    print("| map | unseen parts caught | " + " | ".join(c for c in LABELS if c != "free") + " |")
    print("|---" * 7 + "|")
    print("(each class: caught / its parts (good parts rejected of 151, threshold))")
    evaluate("total, K 128 (shipped)", lambda m: whitening(x[m], 128, 0.01), taps, wide, val_wide)
    for keep in (64, 128):
        for shrink in (0.01, 0.1):
            evaluate(
                f"within-photo, K {keep}, shrinkage {shrink}",
                lambda m, k=keep, s=shrink: within_photo(x[m], photo[m], k, s),
                taps,
                wide,
                val_wide,
            )
    for removed in (8, 32):
        evaluate(
            f"total after removing {removed} nuisance axes",
            lambda m, r=removed: nuisance_removed(x[m], photo[m], r),
            taps,
            wide,
            val_wide,
        )


if __name__ == "__main__":
    main()
