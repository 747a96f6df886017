"""A one-epoch PP-LCNet run on generated tiles: the smallest real training run (seconds)."""

from __future__ import annotations

from pathlib import Path

# 120 steps instead of 2 (7 s): a one-epoch run's batch-norm statistics are still near
# their start, so in eval mode every view gets the same output and embedding; a test of
# what embeddings tell apart needs this (macro-F1 ~0.4, views embedded apart).
TRAINED_A_LITTLE = {"epochs": 8, "steps_per_epoch": 15, "lr": 5e-3, "warmup_epochs": 1}


def tiny_run(root: Path, **overrides: object) -> Path:
    """Train into `root/run` on tiles written to `root/images`; returns the run folder.
    `overrides`: TrainConfig fields (e.g. TRAINED_A_LITTLE)."""
    from linewatch.pipeline.simulation.synthetic import write_image_folder
    from linewatch.pipeline.training.train import TrainConfig, train

    images = write_image_folder(root / "images", per_class=6, size=64, seed=1)
    settings: dict = {
        "arch": "PPLCNet_x0_25",
        "image_size": 48,
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 8,
        "patience": 30,
    }
    config = TrainConfig(data=str(images), run_dir=str(root / "run"), **{**settings, **overrides})
    train(config)
    return root / "run"
