"""Few-shot recall of a class added from reviews, by what each reviewed part brings to
the gallery, on a train-embedding run's cached taps (`RUN/embedding/taps.npz`) plus the
eight flips and quarter turns of each training photo's canonical line view (computed
once by the run's feature graph, cached as `RUN/embedding/dihedral_taps.npz`).

    python bench/few_shot_variants.py runs/embed

Protocol of `bench/embedding_variants.py` (issue 26): per defect class, the whitening
(K 128, shrinkage 0.01) is fitted without it, the gallery holds 4 views of every other
training photo, `shots` of its training photos are put back (5 draws) and the
validation photos' canonical views of that class are searched (1-NN). Rows differ in
what a put-back photo brings:

- `4 line views`: the protocol's own (what `linewatch model eval` reports);
- `1 view`: the canonical crop only: what `gallery add --from-reviews` adds per
  reviewed part (its evidence crop);
- `1 view × 8`: that crop, its mirror image and their quarter turns;
- `16 line views`: every cached view.

Besides recall, each row says how many validation photos of the *other* classes
(`free` separately) the put-back entries take as their nearest (false labels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from linewatch.pipeline.gallery.views import dihedral_views
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.embedding_train import TAPS_FILE, Taps
from linewatch.pipeline.training.static_runner import StaticRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_variants import cached_taps, whitening  # noqa: E402

LABELS = ("blowhole", "break", "crack", "fray", "free", "uneven")
NORMAL = LABELS.index("free")
SHOTS = (5, 10)
DRAWS = 5
DIHEDRAL_FILE = "dihedral_taps.npz"


def dihedral_taps(run_dir: Path, size: int) -> np.ndarray:
    """[photos, 8, F] features of each training photo's canonical view, 8 ways."""
    cache = data.photo_cache_size(size)

    def compute(split: data.Split, runner: StaticRunner) -> np.ndarray:
        chunks = []
        for first in range(0, len(split.train), 32):
            photos = [data.load_image(item, cache) for item, _ in split.train[first : first + 32]]
            views = [v for p in photos for v in dihedral_views(line_views.canonical_view(p, size))]
            chunks.append(runner(data.to_batch(np.stack(views))))
        return np.concatenate(chunks).reshape(len(split.train), 8, -1)

    return cached_taps(run_dir, DIHEDRAL_FILE, compute)


def few_shot(
    taps: Taps,
    turned: np.ndarray,
    brings: str,
    margin: float = 0.0,
    free_margin: float | None = None,
) -> dict[str, tuple[float, float, float]]:
    """{class: (recall at 5, recall at 10, false labels per draw at 10)}."""
    results = {}
    for left_out in [c for c in range(len(LABELS)) if c != NORMAL]:
        embed, base, base_labels, queries, own = without_class(taps, left_out)
        recall, wrong = {}, 0.0
        for shots in SHOTS:
            rng = np.random.default_rng([0, shots])
            found = []
            for _ in range(DRAWS):
                chosen = rng.choice(own, size=min(shots, len(own)), replace=False)
                added = embed(_entries(taps, turned, chosen, brings))
                gallery = np.concatenate([base, added])
                labels = np.concatenate([base_labels, np.full(len(added), left_out)])
                similarity = queries @ gallery.T
                predicted = labels[similarity.argmax(axis=1)]
                reviewed = similarity[:, len(base) :].max(axis=1)
                free_margin_ = margin if free_margin is None else free_margin
                defect = base_labels != NORMAL
                near_defect = similarity[:, : len(base)][:, defect].max(axis=1)
                near_free = similarity[:, : len(base)][:, ~defect].max(axis=1)
                pulled = (reviewed + margin >= near_defect) & (reviewed + free_margin_ >= near_free)
                predicted[pulled] = left_out
                found.append((predicted[taps.val_targets == left_out] == left_out).mean())
                if shots == SHOTS[-1]:
                    wrong += ((predicted == left_out) & (taps.val_targets == NORMAL)).sum()
            recall[shots] = float(np.mean(found))
        results[LABELS[left_out]] = (recall[5], recall[10], wrong / DRAWS)
    return results


def without_class(taps: Taps, left_out: int) -> tuple:
    """The protocol's gallery for a class nobody trained for: (the whitening fitted
    without it, the 4 views of every other training photo embedded, their labels, the
    validation photos embedded, the class's own training photos)."""
    embed = whitening(taps.train[taps.train_targets != left_out], 128, 0.01)
    known = taps.views(0, 4) & (taps.train_targets != left_out)
    base, base_labels = embed(taps.train[known]), taps.train_targets[known]
    own = np.unique(taps.train_photo[taps.train_targets == left_out])
    return embed, base, base_labels, embed(taps.val), own


def _entries(taps: Taps, turned: np.ndarray, chosen: np.ndarray, brings: str) -> np.ndarray:
    mine = np.isin(taps.train_photo, chosen)
    if brings == "4 line views":
        return taps.train[mine & taps.views(0, 4)]
    if brings == "16 line views":
        return taps.train[mine]
    if brings == "1 view":
        return turned[chosen, 0]
    return turned[chosen].reshape(-1, turned.shape[-1])  # 1 view × 8


def run_inputs(doc: str | None) -> tuple[Taps, np.ndarray]:
    """A bench's command line (RUN [--size]): the run's cached taps and the 8 flips and
    quarter turns of each training photo's canonical view."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    with np.load(args.run_dir / "embedding" / TAPS_FILE) as stored:
        taps = Taps(**{name: stored[name] for name in Taps.__dataclass_fields__})
    return taps, dihedral_taps(args.run_dir, args.size)


def main() -> None:
    taps, turned = run_inputs(__doc__)
    classes = " | ".join(c for c in LABELS if c != "free")
    print(
        f"| a reviewed photo brings | recall 5 / 10 | {classes} "
        "| good photos labelled X, per draw (10 shots; of 151 × 5 classes) |"
    )
    print("|---" * 8 + "|")
    variants = [(b, 0.0) for b in ("4 line views", "1 view", "1 view × 8", "16 line views")]
    variants += [("1 view × 8", m) for m in (0.02, 0.05, 0.07, 0.1)]
    variants = [(b, m, None) for b, m in variants]
    variants += [("1 view × 8", m, f) for m in (0.1, 0.15, 0.2) for f in (0.0, 0.03)]
    for brings, margin, free_margin in variants:
        rows = few_shot(taps, turned, brings, margin, free_margin)
        r5 = np.mean([v[0] for v in rows.values()])
        r10 = np.mean([v[1] for v in rows.values()])
        per = " | ".join(f"{v[1]:.2f}" for v in rows.values())
        wrong = sum(v[2] for v in rows.values())
        if margin:
            brings = f"{brings}, nearest reviewed within {margin}"
            if free_margin is not None:
                brings += f" of defects, {free_margin} of good entries"
        print(f"| {brings} | {r5:.2f} / {r10:.2f} | {per} | {wrong:.1f} |", flush=True)


if __name__ == "__main__":
    main()
