"""Teacher, distillation, line views and the operating point, on generated tiles only."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import linewatch.pipeline.training  # noqa: F401  (legacy export format)
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.simulation.synthetic import write_image_folder
from linewatch.pipeline.training import line_views
from linewatch.pipeline.training.export import export_run
from linewatch.pipeline.training.metrics import (
    defect_report,
    fit_temperature,
    part_scores,
    recall_at_false_alarms,
    threshold_for_false_alarms,
)
from linewatch.pipeline.training.quantize import quantize_folder
from linewatch.pipeline.training.train import TrainConfig, train
from linewatch.pipeline.video.crop import PixelBox, crop_view
from tests.support.services import linewatch


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("distill")
    images = write_image_folder(root / "images", per_class=5, size=64, seed=2)
    common = {"data": str(images), "image_size": 64, "batch_size": 8, "views": "line"}
    teacher = TrainConfig(
        run_dir=str(root / "teacher"),
        arch="EfficientNetLite0",
        epochs=2,
        views_per_image=2,
        **common,
    )
    train(teacher)
    student = TrainConfig(
        run_dir=str(root / "student"),
        arch="PPLCNet_x0_25",
        epochs=1,
        steps_per_epoch=2,
        teacher=str(root / "teacher"),
        **common,
    )
    train(student)
    return root / "teacher", root / "student"


def test_teacher_keeps_its_views_and_logits_for_the_student(teacher_and_student) -> None:  # type: ignore[no-untyped-def]
    teacher, student = teacher_and_student
    with np.load(teacher / "pool.npz") as pool:
        assert pool["views"].shape == (24 * 2, 64, 64)  # 4 of 5 per class train, 6 classes
        assert pool["logits"].shape == (48, 6) and pool["targets"].shape == (48,)
    assert (student / "best.pdparams").exists()
    assert (student / "split.json").read_text() == (teacher / "split.json").read_text()


@pytest.mark.parametrize("which", [0, 1])
def test_teacher_and_student_export_with_a_calibrated_operating_point(
    teacher_and_student, which: int, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    run = teacher_and_student[which]
    diff = export_run(run, tmp_path / "model", max_false_alarms=0.2)
    assert diff < 1e-4, "the predictor gives what the training network gives"
    config = yaml.safe_load((tmp_path / "model" / "inference.yml").read_text())
    assert config["Linewatch"]["calibration_temperature"] > 0
    assert config["Linewatch"]["max_false_alarms"] == 0.2
    assert config["Linewatch"]["crop_margin"] == 0.04, "trained on line views"
    assert 0 < config["Linewatch"]["defect_threshold"] < 1
    probs = Classifier(tmp_path / "model", max_batch=4).predict([np.zeros((50, 70, 3), np.uint8)])
    assert probs.shape == (1, 6) and np.isclose(probs.sum(), 1, atol=1e-4)


def test_threshold_for_a_false_alarm_budget_on_a_hand_made_list() -> None:
    mass = np.array([0.95, 0.9, 0.6, 0.3, 0.5, 0.4, 0.2, 0.1, 0.05, 0.01, 0.0, 0.0])
    is_defect = np.array([True] * 4 + [False] * 8)
    # No false alarm allowed (8 good x 10 % < 1): above the best good score 0.5, below the
    # lowest defect above it (0.6), in the middle in logit space.
    threshold = threshold_for_false_alarms(mass, is_defect, 0.1)
    assert 0.5 < threshold < 0.6
    assert threshold == pytest.approx(1 / (1 + np.sqrt(0.4 / 0.6)), rel=1e-6)
    report = defect_report(mass, is_defect, threshold)
    assert (report.recall, report.false_alarm_rate) == (0.75, 0.0)
    # One false alarm allowed (12.5 %): the 0.5 tile may be flagged, 0.4 may not.
    best = recall_at_false_alarms(mass, is_defect, 0.125)
    assert 0.4 < best.threshold <= 0.6 and best.false_alarm_rate <= 0.125
    assert best.recall == 0.75, "0.3 lies below good tiles"
    assert recall_at_false_alarms(mass, is_defect, 0.5).recall == 1.0


def test_simulated_parts_take_the_mean_of_their_top_views() -> None:
    mass = np.array([0.1, 0.9, 0.2, 0.7, 0.3, 0.0, 0.5, 0.4, 0.8])
    photo = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    scores, photos = part_scores(mass, photo, views_per_part=2, top_views=2)
    # photo 0: (0.1, 0.9), (0.2, 0.7), (0.3, 0.0); photo 1: (0.5, 0.4), 0.8 left over.
    assert np.allclose(scores, [0.5, 0.45, 0.15, 0.45]) and photos.tolist() == [0, 0, 0, 1]
    scores, _ = part_scores(mass, photo, views_per_part=3, top_views=1)
    assert np.allclose(scores, [0.9, 0.7, 0.8]), "one top view: the part's highest view"


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 4))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(4, p=p) for p in probs])
    assert fit_temperature(true_logits * 3, targets) == pytest.approx(3, rel=0.1)


def test_the_canonical_line_view_is_the_crop_the_line_cuts() -> None:
    photo = np.random.default_rng(1).integers(0, 255, (90, 70), dtype=np.uint8)
    frame, _, box = line_views.place_on_belt(photo, 64, line_views.BELT_LEVEL)
    assert frame.shape == (73, 73) and (box.width, box.height) == (64, 64)
    assert frame[0, 0] == line_views.BELT_LEVEL
    expected = crop_view(frame.astype(np.uint8), PixelBox(4, 4, 68, 68), size=(64, 64))
    assert np.array_equal(line_views.canonical_view(photo, 64), expected)


def test_training_views_vary_and_keep_the_mask_on_the_defect() -> None:
    photo = np.full((80, 80), 150, np.uint8)
    photo[10:20, 50:60] = 255
    mask = np.zeros_like(photo)
    mask[10:20, 50:60] = 255
    rng = np.random.default_rng(4)
    views = [line_views.line_view(photo, 48, rng, mask) for _ in range(8)]
    assert all(v.shape == (48, 48) and m.shape == (48, 48) for v, m in views)
    assert len({v.tobytes() for v, _ in views}) == 8
    for view, moved in views:
        assert view[moved > 127].mean() > view[moved == 0].mean(), "the mask follows the spot"


def test_distillation_with_frozen_stages_trains_only_the_top(teacher_and_student) -> None:  # type: ignore[no-untyped-def]
    import paddle

    from linewatch.pipeline.training.nets import build_network

    teacher, student = teacher_and_student
    config = TrainConfig(
        data=str(teacher.parent / "images"),
        run_dir=str(teacher.parent / "frozen"),
        arch="PPLCNet_x0_25",
        image_size=64,
        batch_size=8,
        epochs=1,
        steps_per_epoch=3,
        ema_decay=0.0,
        teacher=str(teacher),
        init_from=str(student / "best.pdparams"),
        frozen_stages=4,
    )
    train(config)
    before, after = (
        paddle.load(str(student / "best.pdparams")),
        paddle.load(str(teacher.parent / "frozen" / "best.pdparams")),
    )
    network = build_network("PPLCNet_x0_25", 6)
    cut = network.stage_end(4)
    trunk = [k for k in before if k.startswith("features.") and int(k.split(".")[1]) < cut]
    top = [k for k in before if k.startswith("features.") and int(k.split(".")[1]) >= cut]
    assert trunk and top
    assert all(np.array_equal(np.asarray(before[k]), np.asarray(after[k])) for k in trunk)
    assert any(not np.allclose(np.asarray(before[k]), np.asarray(after[k])) for k in top)


@pytest.fixture(scope="module")
def folds_run(teacher_and_student, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    teacher, _ = teacher_and_student
    run = tmp_path_factory.mktemp("folds") / "run"
    config = TrainConfig(
        data=str(teacher.parent / "images"),
        run_dir=str(run),
        arch="EfficientNetLite0_s4",
        image_size=64,
        batch_size=8,
        epochs=2,
        views_per_image=2,
        views="line",
        folds=2,
    )
    train(config)
    export_run(run, run.parent / "model", max_false_alarms=0.2)
    return run


def test_truncated_lite0_head_takes_its_operating_point_from_held_out_folds(
    teacher_and_student, folds_run: Path
) -> None:  # type: ignore[no-untyped-def]
    with np.load(folds_run / "out_of_fold.npz") as oof:
        assert oof["logits"].shape == (24, 6) and oof["targets"].shape == (24,)
        assert oof["view_logits"].shape == (48, 6) and oof["view_photo"].shape == (48,)
        assert np.isfinite(oof["logits"]).all() and np.isfinite(oof["view_logits"]).all()
    extra = yaml.safe_load((folds_run.parent / "model" / "inference.yml").read_text())["Linewatch"]
    assert extra["operating_point_from"] == (
        "out-of-fold training photos as line parts (2 views, top-2 mean)"
    ), "two views per photo make one simulated part each"
    assert 0 <= extra["selection_false_alarm_rate"] <= 0.2, "the budget holds where it was set"
    full = (teacher_and_student[0] / "best.pdparams").stat().st_size
    assert (folds_run / "best.pdparams").stat().st_size < full / 4, "stages 5-7 cut"
    assert sorted(p.name for p in (folds_run / "fold_heads").iterdir()) == [
        "fold0.pdparams",
        "fold1.pdparams",
    ]


def test_int8_copy_of_a_folds_run_sets_its_threshold_on_held_out_parts(
    folds_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8"
    run = linewatch(
        "quantize",
        "--model",
        str(folds_run.parent / "model"),
        "--out",
        str(out),
        "--split-file",
        str(folds_run / "split.json"),
        "--run-dir",
        str(folds_run),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    quantization = yaml.safe_load((out / "inference.yml").read_text())["Linewatch"]["quantization"]
    assert quantization["threshold_from"] == (
        "out-of-fold INT8 scores of the run's training photos as line parts (2 views, top-2 mean)"
    )
    assert 0 <= quantization["selection_false_alarm_rate"] <= 0.2, "the FP32 model's budget"
    recall = quantization["selection_defect_recall"]
    assert f"there: defect recall {recall:.3f}" in run.stdout


def test_int8_held_out_threshold_names_what_the_run_lacks(folds_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(folds_run, run)
    shutil.rmtree(run / "fold_heads")
    with pytest.raises(LinewatchError, match=r"fold1\.pdparams.*retrain with --folds"):
        quantize_folder(
            model_dir=folds_run.parent / "model",
            out_dir=tmp_path / "int8",
            photos=np.zeros((2, 74, 74), np.uint8),
            run_dir=run,
        )


def test_photo_folds_deal_each_class_round_the_folds() -> None:
    from linewatch.pipeline.training.teacher import photo_folds

    targets = np.array([0] * 10 + [1] * 3 + [2] * 5)
    folds = photo_folds(targets, 3, seed=0)
    for label, count in ((0, 10), (1, 3), (2, 5)):
        sizes = np.bincount(folds[targets == label], minlength=3)
        assert sizes.sum() == count and sizes.max() - sizes.min() <= 1
