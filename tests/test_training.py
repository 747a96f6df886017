"""Training tools on generated tiles (never the real dataset): train, export, reload, metrics."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import linewatch.pipeline.training  # noqa: F401  (sets the legacy export format first)
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.model import Classifier
from linewatch.pipeline.synthetic import write_image_folder
from linewatch.pipeline.training.export import export_run
from linewatch.pipeline.training.metrics import class_report, defect_report, pick_threshold
from linewatch.pipeline.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
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


def test_one_epoch_writes_a_run_folder(trained_run: Path) -> None:
    for name in ("config.json", "split.json", "metrics.jsonl", "best.pdparams", "last.pdckpt"):
        assert (trained_run / name).exists(), name
    assert len((trained_run / "metrics.jsonl").read_text().splitlines()) == 1


def test_export_reloads_with_identical_outputs(trained_run: Path, tmp_path: Path) -> None:
    diff = export_run(trained_run, tmp_path / "model")
    assert diff < 1e-4
    assert (tmp_path / "model" / "inference.pdmodel").exists(), "legacy program format"
    config = yaml.safe_load((tmp_path / "model" / "inference.yml").read_text())
    assert config["PostProcess"]["label_list"][4] == "free"
    classifier = Classifier(tmp_path / "model", max_batch=4)
    probs = classifier.predict([np.zeros((30, 40, 3), np.uint8)] * 5)
    assert probs.shape == (5, 6) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_resume_continues_from_the_checkpoint_in_a_new_process(trained_run: Path) -> None:
    config = json.loads((trained_run / "config.json").read_text())
    command = [
        sys.executable,
        "-m",
        "linewatch.cli",
        "train",
        "--resume",
        "--run-dir",
        str(trained_run),
        "--data",
        config["data"],
        "--arch",
        config["arch"],
        "--image-size",
        str(config["image_size"]),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for line in (trained_run / "metrics.jsonl").open()]
    assert epochs == [1, 2]


def test_training_on_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    config = TrainConfig(data=str(tmp_path / "nope"), run_dir=str(tmp_path / "run"))
    with pytest.raises(LinewatchError, match="not found"):
        train(config)


def test_metrics_on_a_known_confusion() -> None:
    labels = ("a", "b", "free")
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    report = class_report(y_true, y_pred, labels)
    assert report.confusion.tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert np.allclose(report.precision, [3 / 4, 1 / 2, 3 / 4])
    assert np.allclose(report.recall, [3 / 4, 1 / 2, 3 / 4])
    assert report.macro_f1 == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    assert report.accuracy == pytest.approx(0.7)


def test_defect_threshold_and_rates() -> None:
    mass = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.7])
    is_defect = np.array([True, True, True, True, False, False, False])
    threshold = pick_threshold(mass, is_defect, min_recall=0.99)
    assert threshold == pytest.approx(0.3)
    report = defect_report(mass, is_defect, threshold)
    assert report.recall == 1.0 and report.false_alarm_rate == pytest.approx(1 / 3)
    assert pick_threshold(mass, is_defect, min_recall=0.75) == pytest.approx(0.6)
