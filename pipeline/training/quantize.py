"""INT8 post-training quantisation of an exported classifier folder for CPU hosts.

Paddle's own `PostTrainingQuantization` (what PaddleSlim's PTQ wraps) runs the FP32
graph on calibration views, picks a scale per activation (by default `avg`: the mean of
the batches' maxima) and per weight channel, and saves a graph with quantize/dequantize
ops. Paddle Inference on CPU with oneDNN INT8 turned on (`Linewatch.precision: int8` in
the folder's inference.yml, which the classifier reads) fuses those into INT8 kernels;
without it the same graph runs in float with the quantisation simulated (correct, slow).

Calibration views are line views of training photos only (never validation photos),
made by the same `line_view` code the models were trained on. INT8 shifts the scores a
little, so the INT8 folder's threshold is the FP32 one carried over by quantile matching
on those views (`matched_threshold`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paddle
import yaml

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import CONFIG_FILE, Classifier, read_model_info
from linewatch.pipeline.training import data, line_views

INT8 = "int8"
ALGORITHMS = ("KL", "hist", "avg", "mse", "abs_max", "min_max")
# Convolutions only: they are the cost. The fully connected heads stay FP32: with them
# quantised too (KL scales) the teacher's validation accuracy fell from 0.967 to 0.40 —
# its head reads pooled features of five stages with very different ranges; convolutions
# only (avg scales) kept 0.967.
QUANTIZED_OPS = ["conv2d", "depthwise_conv2d"]


def calibration_batches(
    photos: np.ndarray, size: int, batch_size: int, seed: int
) -> list[np.ndarray]:
    """Randomised line views of `photos` as normalised NCHW float32 batches."""
    rng = np.random.default_rng([seed, 8])
    views = np.stack([line_views.line_view(photo, size, rng)[0] for photo in photos])
    batch = data.to_batch(views)
    return [batch[i : i + batch_size] for i in range(0, len(batch), batch_size)]


def calibration_photos(split_file: Path, count: int, seed: int) -> np.ndarray:
    """`count` training photos of the split (grey, cached at the line-view size)."""
    if not split_file.is_file():
        raise LinewatchError(f"split file {split_file} not found (a run's split.json)")
    train = data.Split.load(split_file).train
    if not train:
        raise LinewatchError(f"split file {split_file} has no training images to calibrate on")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(train), size=min(count, len(train)), replace=False)
    return data.load_images(tuple(train[i] for i in sorted(chosen)), 256)


def quantize_folder(
    *,
    model_dir: Path,
    out_dir: Path,
    photos: np.ndarray,
    algo: str = "avg",
    batch_size: int = 16,
    seed: int = 0,
) -> Path:
    """Write an INT8 copy of the classifier folder `model_dir` to `out_dir`, calibrated on
    line views of `photos` (grey uint8 [N, H, W]); returns `out_dir`."""
    if algo not in ALGORITHMS:
        raise LinewatchError(f"quantisation algorithm {algo!r} is not one of {ALGORITHMS}")
    info, preprocessor, model_file, params_file = read_model_info(model_dir)
    if model_file.suffix != ".pdmodel":
        raise LinewatchError(f"{model_file} is not a legacy .pdmodel program; re-export it")
    width, height = preprocessor.output_size
    if width != height:
        raise LinewatchError(f"{model_dir} takes {width}x{height} input; square only")
    batches = calibration_batches(photos, width, batch_size, seed)
    _run_ptq(model_dir, out_dir, batches, algo)
    _write_config(model_dir, out_dir, algo=algo, photos=len(photos), threshold=None)
    threshold = matched_threshold(model_dir, out_dir, np.concatenate(batches))
    _write_config(model_dir, out_dir, algo=algo, photos=len(photos), threshold=threshold)
    return out_dir


def matched_threshold(fp32_dir: Path, int8_dir: Path, batch: np.ndarray) -> float:
    """The INT8 threshold that flags the same share of the calibration views as the FP32
    model's threshold does (quantile matching: INT8 shifts the scores, not their order).
    Training photos only, no labels: the validation photos still only measure it."""
    fp32 = Classifier(fp32_dir, device="cpu", max_batch=16)
    int8 = Classifier(int8_dir, device="cpu", max_batch=16)
    normal = [fp32.info.labels.index(label) for label in fp32.info.normal_labels]
    if not normal:
        return fp32.info.defect_threshold
    mass_fp32 = 1 - fp32.infer(batch)[:, normal].sum(axis=1)
    mass_int8 = 1 - int8.infer(batch)[:, normal].sum(axis=1)
    share_below = float((mass_fp32 < fp32.info.defect_threshold).mean())
    # A confident model's scores saturate at 1.0 in float32: keep the threshold inside
    # (0, 1) at the 6 decimals inference.yml holds, where "score >= threshold" still
    # flags the saturated views.
    return float(np.clip(np.quantile(mass_int8, share_below), 1e-6, 1 - 1e-6))


def _run_ptq(model_dir: Path, out_dir: Path, batches: list[np.ndarray], algo: str) -> None:
    """Paddle's PTQ in a private scope (the model's weights never touch the global one)."""
    from paddle.static.quantization import PostTrainingQuantization

    def feeds() -> Iterator[dict[str, np.ndarray]]:
        yield from ({"x": batch} for batch in batches)

    paddle.enable_static()
    scope = paddle.static.Scope()
    try:
        with paddle.static.scope_guard(scope):
            ptq = PostTrainingQuantization(
                executor=paddle.static.Executor(paddle.CPUPlace()),
                scope=scope,
                model_dir=str(model_dir),
                model_filename="inference.pdmodel",
                params_filename="inference.pdiparams",
                data_loader=feeds,
                batch_nums=len(batches),
                algo=algo,
                quantizable_op_type=QUANTIZED_OPS,
                onnx_format=True,
            )
            ptq.quantize()
            out_dir.mkdir(parents=True, exist_ok=True)
            ptq.save_quantized_model(
                str(out_dir),
                model_filename="inference.pdmodel",
                params_filename="inference.pdiparams",
            )
    finally:
        paddle.disable_static()


def _write_config(
    model_dir: Path, out_dir: Path, *, algo: str, photos: int, threshold: float | None
) -> None:
    config = yaml.safe_load((model_dir / CONFIG_FILE).read_text())
    glob = config.setdefault("Global", {})
    glob["model_version"] = f"{glob.get('model_version', 'unversioned')}-{INT8}"
    extra = config.setdefault("Linewatch", {})
    for key in [k for k in extra if k.startswith(("validation_", "selection_"))]:
        extra.pop(key)  # FP32 figures: the INT8 model's own are in its model card
    extra["precision"] = INT8
    extra["quantization"] = {
        "source_model": model_dir.name,
        "algorithm": algo,
        "calibration_photos": photos,
        "date": time.strftime("%Y-%m-%d"),
    }
    if threshold is not None:
        extra["quantization"]["fp32_defect_threshold"] = extra.get("defect_threshold")
        extra["quantization"]["threshold_from"] = "quantile-matched on the calibration views"
        extra["defect_threshold"] = round(threshold, 6)
    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
