"""Few-shot recall of a class added from reviews, by the rule that gives a query the
new class, on a train-embedding run's cached taps (as `bench/few_shot_variants.py`).

    python bench/few_shot_rules.py runs/embed

Protocol of `bench/few_shot_variants.py`, 10 reviewed photos per left-out class (5
draws), each bringing its canonical crop × 8 (what `gallery add` adds). Rules:

- `nearest entry`: 1-NN over the whole gallery (what the line does);
- `k nearest, v votes`: the new class when at least v of the k nearest entries carry it;
- `linear probe`: a class-balanced logistic regression of the new entries against every
  other entry, fitted when the class is added; the new class when it scores above t;
- `prototype`: the new class when the mean of its entries is within m of the nearest
  other entry.

Each row also counts the good validation photos given the new class (summed over the
5 classes, of 151 × 5 per draw): every one of them is a false reject on a line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from linewatch.pipeline.training.embedding_train import Taps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from few_shot_variants import (  # noqa: E402
    DRAWS,
    LABELS,
    NORMAL,
    _entries,
    run_inputs,
    without_class,
)

SHOTS = 10
Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (queries, base, added)


def probe(reg: float, threshold: float, steps: int = 300, rate: float = 0.5) -> Rule:
    def rule(queries: np.ndarray, base: np.ndarray, added: np.ndarray) -> np.ndarray:
        x = np.concatenate([added, base])
        y = np.r_[np.ones(len(added)), np.zeros(len(base))]
        weight = np.where(y == 1, 0.5 / len(added), 0.5 / len(base))
        w, b = np.zeros(x.shape[1]), 0.0
        for _ in range(steps):
            error = (1 / (1 + np.exp(-(x @ w + b))) - y) * weight
            w -= rate * (x.T @ error + reg * w)
            b -= rate * error.sum()
        return 1 / (1 + np.exp(-(queries @ w + b))) > threshold

    return rule


def votes(k: int, needed: int) -> Rule:
    def rule(queries: np.ndarray, base: np.ndarray, added: np.ndarray) -> np.ndarray:
        similarity = queries @ np.concatenate([base, added]).T
        nearest = np.argsort(-similarity, axis=1)[:, :k]
        return (nearest >= len(base)).sum(axis=1) >= needed

    return rule


def prototype(margin: float) -> Rule:
    def rule(queries: np.ndarray, base: np.ndarray, added: np.ndarray) -> np.ndarray:
        centre = added.mean(axis=0)
        centre /= np.linalg.norm(centre)
        return queries @ centre + margin >= (queries @ base.T).max(axis=1)

    return rule


def few_shot(taps: Taps, turned: np.ndarray, rule: Rule | None) -> tuple[dict, float]:
    """({class: recall at 10 shots}, good photos given a new class per draw)."""
    recall, wrong = {}, 0.0
    for left_out in [c for c in range(len(LABELS)) if c != NORMAL]:
        embed, base, base_labels, queries, own = without_class(taps, left_out)
        rng, found = np.random.default_rng([0, SHOTS]), []
        for _ in range(DRAWS):
            chosen = rng.choice(own, size=min(SHOTS, len(own)), replace=False)
            added = embed(_entries(taps, turned, chosen, "1 view × 8"))
            labels = np.r_[base_labels, np.full(len(added), left_out)]
            predicted = labels[(queries @ np.concatenate([base, added]).T).argmax(axis=1)]
            if rule is not None:
                predicted[rule(queries, base, added)] = left_out
            found.append((predicted[taps.val_targets == left_out] == left_out).mean())
            wrong += ((predicted == left_out) & (taps.val_targets == NORMAL)).sum() / DRAWS
        recall[LABELS[left_out]] = float(np.mean(found))
    return recall, wrong


def main() -> None:
    taps, turned = run_inputs(__doc__)
    rules: list[tuple[str, Rule | None]] = [("nearest entry", None)]
    rules += [(f"{k} nearest, {v} votes", votes(k, v)) for k, v in ((5, 2), (10, 3), (10, 2))]
    rules += [(f"linear probe, t {t}", probe(0.01, t)) for t in (0.9, 0.7, 0.5)]
    rules += [(f"prototype, m {m}", prototype(m)) for m in (0.05, 0.1)]
    classes = " | ".join(c for c in LABELS if c != "free")
    print(f"| rule | recall at 10 | {classes} | good photos given the class, per draw |")
    print("|---" * 8 + "|")
    for name, rule in rules:
        recall, wrong = few_shot(taps, turned, rule)
        per = " | ".join(f"{value:.2f}" for value in recall.values())
        print(f"| {name} | {np.mean(list(recall.values())):.2f} | {per} | {wrong:.1f} |")


if __name__ == "__main__":
    main()
