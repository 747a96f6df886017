"""`linewatch train --cell-features`: a per-cell head trained on defect masks, cross-fitted
features for the frozen-trunk head, and one exported graph, on generated tiles with
their masks (never the real dataset). The trunk starts from the test extra's ImageNet
weights."""

from pathlib import Path

# isort: off
import linewatch.pipeline.training  # noqa: F401  (the legacy export format, before paddle)
import paddle

# isort: on
import cv2
import numpy as np
import pytest
import yaml

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.cell_features import UNKNOWN, cell_targets
from linewatch.pipeline.training.embedding_train import network_from_model
from linewatch.pipeline.training.export import (
    export_run,
    exported_inverse_temperature,
    load_run,
)
from linewatch.pipeline.training.teacher import OOF_FILE, make_pool
from linewatch.pipeline.training.train import TrainConfig, train

SIZE = 64
LABELS = ("free", "spot")


def _tile(rng: np.random.Generator, spot: bool) -> tuple[np.ndarray, np.ndarray]:
    """A grey textured tile, with a bright spot somewhere for `spot`; and its mask."""
    tile = np.clip(rng.normal(90, 12, (96, 96)), 0, 255).astype(np.uint8)
    mask = np.zeros_like(tile)
    if spot:
        centre = (int(rng.integers(20, 76)), int(rng.integers(20, 76)))
        cv2.circle(tile, centre, 9, 235, -1)
        cv2.circle(mask, centre, 9, 255, -1)
    return tile, mask


def write_masked_folder(root: Path, per_class: int, seed: int) -> Path:
    """`root/images/<label>/<n>.png` and the defects' masks `root/masks/<label>/<n>.png`."""
    rng = np.random.default_rng(seed)
    for label in LABELS:
        (root / "images" / label).mkdir(parents=True)
        (root / "masks" / label).mkdir(parents=True)
        for index in range(per_class):
            tile, mask = _tile(rng, label == "spot")
            cv2.imwrite(str(root / "images" / label / f"t{index}.png"), tile)
            if label != "free":
                cv2.imwrite(str(root / "masks" / label / f"t{index}.png"), mask)
    return root / "images"


@pytest.fixture(scope="module")
def cell_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    config = TrainConfig(
        data=str(write_masked_folder(root, per_class=24, seed=3)),
        run_dir=str(root / "run"),
        arch="EfficientNetLite0_s5",
        image_size=SIZE,
        batch_size=8,
        epochs=2,
        views_per_image=12,
        views="line",
        folds=2,
        photo_share=0.25,
        pretrained=True,
        cell_features=True,
    )
    train(config)
    return root / "run"


def test_a_cell_is_the_views_defect_where_a_tenth_of_it_is_in_the_mask() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[0:16, 0:16] = 255  # all of cell (0, 0)
    mask[16:17, 16:32] = 255  # a sixteenth of cell (1, 1): below the share
    mask[48:52, 48:64] = 255  # a quarter of cell (3, 3)
    cells = cell_targets(mask, label=2, normal=0, grid=4).reshape(4, 4)
    assert cells[0, 0] == 2 and cells[3, 3] == 2 and cells[1, 1] == 0
    assert (cells == 2).sum() == 2
    assert (cell_targets(None, label=2, normal=0, grid=4) == UNKNOWN).all()


def test_masks_follow_the_views_without_changing_them() -> None:
    rng = np.random.default_rng(0)
    photos = np.stack([_tile(rng, True)[0] for _ in range(3)])
    masks = [_tile(np.random.default_rng(i), True)[1] for i in range(3)]
    targets = np.array([1, 1, 1])
    plain, _, none = make_pool(photos, targets, SIZE, 6, seed=1, photo_share=0.5)
    views, _, cells = make_pool(
        photos,
        targets,
        SIZE,
        6,
        seed=1,
        photo_share=0.5,
        masks=masks,
        cells=lambda mask, label: cell_targets(mask, label, normal=0, grid=4),
    )
    assert np.array_equal(plain, views), "the same random stream with masks as without"
    assert none is None, "no cells asked, none made"
    assert cells is not None and cells.shape == (18, 16)
    assert (cells != UNKNOWN).all(), "line and photo views both carry the mask"
    assert ((cells == 1).sum(axis=1) > 0).all(), "the spot is in every view"
    spot = np.random.default_rng(5)
    tile, mask = _tile(spot, True)
    view, view_mask = line_views.masked_training_view(tile, SIZE, spot, 0.0, mask=mask)
    assert view_mask is not None
    bright = view > 200
    assert (view_mask[bright] > 0).mean() > 0.9, "the mask lies on the spot in the view"
    view, view_mask = line_views.masked_training_view(tile, SIZE, spot, 1.0, mask=mask)
    assert view_mask is not None, "a photo view carries it too"
    bright = view > 200
    assert (view_mask[bright] > 0).mean() > 0.9 and (view_mask[~bright] > 0).mean() < 0.1


def test_the_cell_head_finds_the_spot_and_the_export_carries_it(
    cell_run: Path, tmp_path: Path
) -> None:
    with np.load(cell_run / OOF_FILE) as oof:
        assert oof["logits"].shape == (38, 2) and np.isfinite(oof["view_logits"]).all()
    config, _, network = load_run(cell_run)
    assert config.cell_features and network.cells is not None
    spot_cells, other_cells = [], []
    for seed in range(6):
        tile, mask = _tile(np.random.default_rng(100 + seed), True)
        view, view_mask = line_views.line_view(tile, SIZE, np.random.default_rng(seed), mask=mask)
        with paddle.no_grad():
            _, grid = network.backbone.pooled_and_grid(paddle.to_tensor(data.to_batch(view[None])))
            probs = paddle.nn.functional.softmax(network.cells.cell_logits(grid), axis=-1)
        spot_probs = probs.numpy()[0, :, LABELS.index("spot")]
        is_spot = cell_targets(view_mask, 1, 0, 4) == 1
        spot_cells += list(spot_probs[is_spot])
        other_cells += list(spot_probs[~is_spot])
    assert np.mean(spot_cells) > np.mean(other_cells) + 0.2, "cells on the spot say spot"

    diff = export_run(cell_run, tmp_path / "model", max_false_alarms=0.2)
    assert diff < 1e-4, "the predictor gives what the training network gives"
    glob = yaml.safe_load((tmp_path / "model" / "inference.yml").read_text())["Global"]
    assert glob["cell_features"] is True
    rebuilt, labels, size = network_from_model(tmp_path / "model")
    assert rebuilt.cells is not None and labels == LABELS and size == SIZE
    views = np.stack([_tile(np.random.default_rng(s), s % 2 == 0)[0] for s in range(4)])
    views = np.stack([cv2.resize(v, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for v in views])
    rgb = [np.repeat(v[..., None], 3, axis=2) for v in views]
    scale = exported_inverse_temperature(tmp_path / "model")
    with paddle.no_grad():
        logits = rebuilt(paddle.to_tensor(data.to_batch(views))).numpy() * scale
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    exported = Classifier(tmp_path / "model", max_batch=4).predict(rgb)
    assert np.abs(exported - expected).max() < 1e-4, "every weight and buffer found its place"


@pytest.mark.parametrize(
    "changes", [{"arch": "PPLCNet_x0_25"}, {"finetune_from_block": 3}], ids=["pplcnet", "finetune"]
)
def test_cell_features_refuse_what_they_cannot_serve(tmp_path: Path, changes: dict) -> None:
    config = TrainConfig(
        data=str(tmp_path),
        run_dir=str(tmp_path / "run"),
        arch="EfficientNetLite0_s5",
        cell_features=True,
    )
    with pytest.raises(LinewatchError, match="--cell-features"):
        train(TrainConfig(**{**config.__dict__, **changes}))
