"""The synthetic line model that end-to-end tests load: a real exported model trained on
clear-cut synthetic tiles (free, blowhole, break, crack), so they can check exact labels
independent of how the shipped magnetic-tile model scores synthetic images.

Training takes about three minutes of CPU, so conftest starts it in a background process
(at low priority) as soon as the tests are collected, and runs the tests that need it
last: the training overlaps the tests that mostly wait on Redis, sockets and clocks.

    python -m tests.line_model OUT   # trains into OUT/run, exports OUT/model
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MIN_MACRO_F1 = 0.98


def train_line_model(root: Path) -> Path:
    """Train and export the model under `root`; returns the exported folder."""
    import linewatch.pipeline.training  # noqa: F401  (legacy export format)
    from linewatch.pipeline.simulation.synthetic import (
        CLEAR_CUT_DEFECTS,
        NORMAL_LABEL,
        write_image_folder,
    )
    from linewatch.pipeline.training.export import export_run
    from linewatch.pipeline.training.train import TrainConfig, train

    labels = (NORMAL_LABEL, *CLEAR_CUT_DEFECTS)
    images = write_image_folder(root / "images", per_class=60, size=224, seed=3, labels=labels)
    config = TrainConfig(
        data=str(images),
        run_dir=str(root / "run"),
        arch="PPLCNet_x0_25",
        image_size=96,
        epochs=24,
        steps_per_epoch=15,
        lr=5e-3,
        warmup_epochs=1,
        patience=30,
    )
    best = train(config)
    if best["val_macro_f1"] < MIN_MACRO_F1:
        raise SystemExit(f"the synthetic test model did not converge: {best}")
    export_run(root / "run", root / "model")
    return root / "model"


class BackgroundTraining:
    """`train_line_model` in a subprocess at nice 19; `result()` waits for its folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "train.out"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.line_model", str(root)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
            )
        os.setpriority(os.PRIO_PROCESS, self.process.pid, 19)  # not preexec_fn: threads

    def result(self) -> Path:
        code = self.process.wait()
        if code != 0:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"training the synthetic line model failed ({code}):\n{tail}")
        return self.root / "model"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    train_line_model(Path(sys.argv[1]))
