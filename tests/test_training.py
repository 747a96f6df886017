"""Training tools on generated tiles (never the real dataset): train, export, reload, metrics."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import linewatch.pipeline.training  # noqa: F401  (sets the legacy export format first)
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import data
from linewatch.pipeline.training.evaluate import eval_items
from linewatch.pipeline.training.export import export_run
from linewatch.pipeline.training.metrics import class_report, defect_report
from linewatch.pipeline.training.train import TrainConfig, train
from tests.support.tiny_run import tiny_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("train"))


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


def test_defect_rates_at_a_threshold() -> None:
    mass = np.array([0.9, 0.8, 0.3, 0.6, 0.1, 0.2, 0.7])
    is_defect = np.array([True, True, True, True, False, False, False])
    report = defect_report(mass, is_defect, 0.3)
    assert report.recall == 1.0 and report.false_alarm_rate == pytest.approx(1 / 3)


def test_masks_beside_the_images_become_cell_targets(tmp_path: Path) -> None:
    image = tmp_path / "tiles" / "images" / "crack" / "a.jpg"
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), np.full((64, 64), 128, np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[40:44, 8:12] = 255
    (tmp_path / "tiles" / "masks" / "crack").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "tiles" / "masks" / "crack" / "a.png"), mask)
    items = ((str(image), 0), ("synthetic:crack:0", 0), ("synthetic:free:0", 1))
    masks = data.load_masks(items, normal=1, size=32)
    assert masks.known.tolist() == [True, False, True]
    targets = data.cell_targets(masks.masks, np.array([0, 0, 1]), masks.known, normal=1, cells=2)
    assert targets[0].tolist() == [[1, 1], [0, 1]]
    assert (targets[1] == -1).all() and (targets[2] == 1).all()


def test_augment_moves_the_mask_with_the_image() -> None:
    image = np.zeros((40, 40), np.uint8)
    image[:20, :20] = 200
    mask = (image > 0).astype(np.uint8) * 255
    rng = np.random.default_rng(3)
    for _ in range(10):
        out, moved = data.augment(image, 32, rng, mask, quarter_turns=True)
        assert np.corrcoef(out.ravel() > 100, moved.ravel() > 127)[0, 1] > 0.9


def test_eval_on_a_split_scores_the_validation_images_of_the_folder(tmp_path: Path) -> None:
    real = tmp_path / "images" / "free" / "x.jpg"
    split = data.Split(
        ("crack", "free"),
        train=(("synthetic:crack:1", 0),),
        val=((str(real), 1), ("synthetic:crack:0", 0), (str(tmp_path / "other.jpg"), 1)),
    )
    split.save(tmp_path / "split.json")
    labels, items = eval_items(tmp_path / "images", tmp_path / "split.json")
    assert labels == ("crack", "free") and items == [(str(real), 1)]
    _, with_synthetic = eval_items(tmp_path / "images", tmp_path / "split.json", True)
    assert len(with_synthetic) == 2
