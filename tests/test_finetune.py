"""Fine-tuning EfficientNet-Lite0 under the multi-tap head, photo views, the calibration
slice and `linewatch model eval`'s two tables, on generated tiles (never the real dataset).
The trunk starts from the ImageNet weights of the test extra's weight package."""

import json
from dataclasses import replace
from pathlib import Path

# isort: off
import linewatch.pipeline.training  # noqa: F401  (the legacy export format, before paddle)
import paddle

# isort: on
import numpy as np
import pytest
import yaml

from linewatch.pipeline.simulation.synthetic import write_image_folder
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.evaluate import evaluate, print_report
from linewatch.pipeline.training.export import export_run
from linewatch.pipeline.training.finetune import (
    CHECKPOINT,
    WEIGHTS,
    predict_logits_dygraph,
    train_finetune,
)
from linewatch.pipeline.training.nets import build_network
from linewatch.pipeline.training.teacher import OOF_FILE
from linewatch.pipeline.training.train import TrainConfig, prepare_run

SIZE = 64


def _config(root: Path, images: Path, **changes: object) -> TrainConfig:
    config = TrainConfig(
        data=str(images),
        run_dir=str(root / "run"),
        arch="EfficientNetLite0_s5",
        image_size=SIZE,
        epochs=2,
        batch_size=8,
        lr=3e-3,
        finetune_from_block=3,
        photo_share=0.25,
        calibration_fraction=0.2,
        calibration_views=4,
        head_warmup_views=0,
        pretrained=True,
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("tiles") / "images", 10, size=96, seed=2)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    train_finetune(_config(root, images))
    return root / "run"


def _start_network(seed: int = 0) -> paddle.nn.Layer:
    """The network a run starts from: ImageNet trunk, head initialised from `seed`."""
    paddle.seed(seed)
    with paddle.utils.unique_name.guard():
        network = build_network("EfficientNetLite0_s5", 6, finetune_from_block=3)
    network.backbone.load_torch_weights()
    return network


def _mean_loss(run_dir: Path, weights: dict | None) -> float:
    """Cross-entropy of the network (`weights`, or the run's start) on the canonical line
    views of the run's training photos."""
    split = data.Split.load(run_dir / "split.json")
    network = _start_network()
    if weights is not None:
        network.set_state_dict(weights)
    photos = data.load_images(split.train, data.photo_cache_size(SIZE))
    views = np.stack([line_views.canonical_view(photo, SIZE) for photo in photos])
    logits = predict_logits_dygraph(network, views)
    targets = np.array([index for _, index in split.train])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def test_a_finetune_lowers_the_loss_and_writes_its_run(finetuned: Path) -> None:
    for name in ("config.json", "split.json", "metrics.jsonl", WEIGHTS, CHECKPOINT, OOF_FILE):
        assert (finetuned / name).exists(), name
    before = _mean_loss(finetuned, None)
    after = _mean_loss(finetuned, paddle.load(str(finetuned / WEIGHTS)))
    assert after < before - 0.2, (before, after)
    lines = (finetuned / "train.log").read_text().splitlines()
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 2 and "views/s" in epochs[0] and "ETA" in epochs[0]


def test_the_trunk_trains_from_its_block_and_the_frozen_part_stays(finetuned: Path) -> None:
    start = _start_network()
    trained = paddle.load(str(finetuned / WEIGHTS))

    def moved(key: str) -> float:
        return float(np.abs(np.asarray(trained[key]) - start.state_dict()[key].numpy()).max())

    assert moved("backbone._conv_stem.weight") == 0
    assert moved("backbone._blocks.2._project_conv.weight") == 0
    assert moved("backbone._blocks.2._bn1._mean") == 0, "frozen BN statistics must not move"
    assert moved("backbone._blocks.3._project_conv.weight") > 0
    assert moved("backbone._blocks.10._bn2.weight") > 0
    assert moved("backbone._blocks.10._bn2._mean") == 0, "trunk BN statistics stay ImageNet's"
    assert moved("head.norm._mean") > 0, "the head's batch norm follows the trunk"


def test_a_stopped_finetune_resumes_to_the_same_weights(
    tmp_path: Path, images: Path, finetuned: Path
) -> None:
    config = _config(tmp_path, images)
    train_finetune(config, stop_after=1)
    assert not (tmp_path / "run" / OOF_FILE).exists(), "calibration waits for the last epoch"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    train_finetune(config, resume=True)
    assert "resumed after epoch 1" in (tmp_path / "run" / "train.log").read_text()
    resumed = paddle.load(str(tmp_path / "run" / WEIGHTS))
    straight = paddle.load(str(finetuned / WEIGHTS))
    for key in ("backbone._blocks.5._project_conv.weight", "head.net.4.weight"):
        np.testing.assert_allclose(np.asarray(resumed[key]), np.asarray(straight[key]), atol=1e-5)


def test_the_calibration_slice_never_overlaps_train_or_validation(
    tmp_path: Path, images: Path
) -> None:
    split = prepare_run(_config(tmp_path, images), resume=False)
    train = {item for item, _ in split.train}
    val = {item for item, _ in split.val}
    calibration = {item for item, _ in split.calibration}
    assert calibration and not calibration & train and not calibration & val
    assert len(train | val | calibration) == 60
    assert {index for _, index in split.calibration} == set(range(6)), "stratified by class"
    again = data.Split.load(tmp_path / "run" / "split.json")
    assert again == split


def test_the_calibration_slice_leaves_a_given_split_s_validation_alone(
    tmp_path: Path, images: Path
) -> None:
    labels, items = data.scan_image_folder(images)
    given = data.stratified_split(labels, items, 0.2, seed=5)
    given.save(tmp_path / "given.json")
    config = _config(tmp_path, images, split_from=str(tmp_path / "given.json"))
    split = prepare_run(config, resume=False)
    assert split.val == given.val
    assert set(split.train) | set(split.calibration) == set(given.train)
    assert not set(split.calibration) & set(given.val)


def test_photo_views_are_tight_crops_without_a_belt() -> None:
    rng = np.random.default_rng(0)
    photo = np.full((96, 96), 200, np.uint8)
    view = line_views.photo_view(photo, SIZE, np.random.default_rng(1))
    again = line_views.photo_view(photo, SIZE, np.random.default_rng(1))
    line = line_views.line_view(photo, SIZE, rng)[0]
    assert view.shape == (SIZE, SIZE) and np.array_equal(view, again)
    assert view[:3].mean() > 150, "no belt around an uploaded photo"
    assert line[:2].mean() < 120, "the line's crop keeps a margin of dark belt"


def test_no_photo_share_keeps_the_line_views_random_stream() -> None:
    photo = np.random.default_rng(3).integers(0, 255, (96, 96), np.uint8)
    mixed = line_views.training_view(photo, SIZE, np.random.default_rng(4), 0.0)
    line = line_views.line_view(photo, SIZE, np.random.default_rng(4))[0]
    assert np.array_equal(mixed, line)


def test_export_of_a_finetune_reloads_and_eval_writes_both_tables(
    finetuned: Path, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    diff = export_run(finetuned, tmp_path / "model")
    assert diff < 1e-4
    extra = yaml.safe_load((tmp_path / "model" / "inference.yml").read_text())["Linewatch"]
    assert extra["operating_point_from"].startswith("calibration slice")
    gallery = yaml.safe_load((tmp_path / "model" / "inference.yml").read_text())["Gallery"]
    assert gallery["novelty_from"].startswith("calibration photos")  # never validation
    result = evaluate(tmp_path / "model", images, finetuned / "split.json", threads=1)
    assert list(result) == ["line", "photo", "gallery"]  # every export now has a gallery
    assert result["line"]["images"] == result["photo"]["images"] == 12
    assert result["line"]["views"] == "line" and result["photo"]["views"] == "photo"
    print_report(result)
    out = capsys.readouterr().out
    assert "line views:" in out and "photo views:" in out
    from linewatch.cli import main

    figures = tmp_path / "eval.json"
    args = ["eval", "--model", str(tmp_path / "model"), "--data", str(images)]
    assert main([*args, "--split-file", str(finetuned / "split.json"), "--json", str(figures)]) == 0
    written = json.loads(figures.read_text())
    assert list(written) == ["line", "photo", "gallery"]
    assert written["photo"]["per_class"] == result["photo"]["per_class"]


def test_textured_belts_and_wide_line_views_render_deterministically() -> None:
    photo = np.full((96, 96), 200, np.uint8)
    flat, _, box = line_views.place_on_belt(photo, 40, 40, np.random.default_rng(6))
    textured, _, _ = line_views.place_on_belt(photo, 40, 40, np.random.default_rng(6), texture=8)
    again, _, _ = line_views.place_on_belt(photo, 40, 40, np.random.default_rng(6), texture=8)
    belt = np.ones(flat.shape, bool)
    belt[box.y1 : box.y2, box.x1 : box.x2] = False
    assert np.array_equal(textured, again)
    assert textured[belt].std() > 1.3 * flat[belt].std()
    assert np.array_equal(textured[~belt], flat[~belt]), "the tile itself is not textured"
    wide = line_views.line_view(
        photo, SIZE, np.random.default_rng(7), jitter=line_views.WIDE_JITTER
    )
    same = line_views.line_view(
        photo, SIZE, np.random.default_rng(7), jitter=line_views.WIDE_JITTER
    )
    assert np.array_equal(wide[0], same[0])
