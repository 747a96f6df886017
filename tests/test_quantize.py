"""INT8 post-training quantisation of a real exported model trained on generated tiles,
calibrated on generated tiles: the INT8 folder loads as an INT8 classifier and agrees
with FP32 on most of a batch. (Not the shipped magnetic-tile model: generated tiles are
foreign to it, and its INT8 and FP32 arg-maxes part on them — 62 % agreement for
2026.12.06-082434 — while on real validation photos its INT8 copy keeps macro-F1; see
its model card.)"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import linewatch.pipeline.training  # noqa: F401  (sets the legacy export format first)
from linewatch.pipeline.errors import LinewatchError, ModelError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.predictor import int8_kernels
from linewatch.pipeline.simulation.synthetic import CLEAR_CUT_DEFECTS, NORMAL_LABEL, make_tile
from linewatch.pipeline.training.line_views import canonical_view
from linewatch.pipeline.training.quantize import quantize_folder

MODEL = Path(__file__).resolve().parents[1] / "models" / "linewatch-tile"


LABELS = (NORMAL_LABEL, *CLEAR_CUT_DEFECTS)  # what the `line_model` fixture knows


def tiles(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([make_tile(rng, LABELS[i % len(LABELS)], 256) for i in range(count)])


@pytest.fixture(scope="module")
def int8_folder(line_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "model"
    return quantize_folder(model_dir=line_model, out_dir=out, photos=tiles(32, seed=0), algo="avg")


def test_int8_folder_loads_as_int8_and_agrees_with_fp32(
    int8_folder: Path, line_model: Path
) -> None:
    config = yaml.safe_load((int8_folder / "inference.yml").read_text())
    assert config["Linewatch"]["precision"] == "int8"
    assert config["Global"]["model_version"].endswith("-int8")
    quantization = config["Linewatch"]["quantization"]
    assert quantization["fp32_defect_threshold"] == fp32_threshold(line_model)
    assert 0 < config["Linewatch"]["defect_threshold"] < 1
    int8 = Classifier(int8_folder, device="cpu", max_batch=8)
    fp32 = Classifier(line_model, device="cpu", max_batch=8)
    assert int8.info.precision == "int8" and fp32.info.precision == "fp32"
    # the FP32 line model ships a gallery; the INT8 copy drops it (INT8 moves embeddings)
    assert fp32.info.gallery is not None and (line_model / "gallery.npz").is_file()
    assert "Gallery" not in config and int8.info.gallery is None
    assert int8.embedding_size == fp32.embedding_size  # PTQ keeps output 1
    views = [np.repeat(canonical_view(t, 224)[..., None], 3, axis=2) for t in tiles(16, seed=1)]
    p_int8, p_fp32 = int8.predict(views), fp32.predict(views)
    assert np.allclose(p_int8.sum(axis=1), 1, atol=1e-3)
    agree = (p_int8.argmax(axis=1) == p_fp32.argmax(axis=1)).mean()
    assert agree >= 0.75, f"INT8 and FP32 agree on only {agree:.0%} of the batch"
    assert np.abs(p_int8 - p_fp32).mean() < 0.1
    assert not np.array_equal(p_int8, p_fp32), "the INT8 graph ran as plain FP32"


def test_int8_folder_is_refused_on_a_cpu_with_other_int8_kernels(
    int8_folder: Path, tmp_path: Path
) -> None:
    here = int8_kernels()
    config = yaml.safe_load((int8_folder / "inference.yml").read_text())
    assert config["Linewatch"]["quantization"]["int8_kernels"] == here
    elsewhere = tmp_path / "model"
    shutil.copytree(int8_folder, elsewhere)
    other = "no-vnni" if here == "vnni" else "vnni"
    config["Linewatch"]["quantization"]["int8_kernels"] = other
    (elsewhere / "inference.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelError, match=f"{other}.*this CPU runs '{here}'.*FP32 folder"):
        Classifier(elsewhere, device="cpu")
    del config["Linewatch"]["quantization"]["int8_kernels"]
    (elsewhere / "inference.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelError, match="not tied to a CPU kind"):
        Classifier(elsewhere, device="cpu")


def test_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LinewatchError, match="not one of"):
        quantize_folder(model_dir=MODEL, out_dir=tmp_path, photos=tiles(2, seed=0), algo="magic")


def fp32_threshold(model: Path) -> float:
    return yaml.safe_load((model / "inference.yml").read_text())["Linewatch"]["defect_threshold"]
