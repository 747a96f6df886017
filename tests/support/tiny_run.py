"""A one-epoch PP-LCNet run on generated tiles: the smallest real training run (seconds)."""

from __future__ import annotations

from pathlib import Path


def tiny_run(root: Path) -> Path:
    """Train into `root/run` on tiles written to `root/images`; returns the run folder."""
    from linewatch.pipeline.simulation.synthetic import write_image_folder
    from linewatch.pipeline.training.train import TrainConfig, train

    images = write_image_folder(root / "images", per_class=6, size=64, seed=1)
    config = TrainConfig(
        data=str(images),
        run_dir=str(root / "run"),
        arch="PPLCNet_x0_25",
        image_size=48,
        epochs=1,
        steps_per_epoch=2,
        batch_size=8,
    )
    train(config)
    return root / "run"
