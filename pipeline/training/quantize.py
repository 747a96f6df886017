"""INT8 post-training quantisation of an exported classifier folder for CPU hosts.

Paddle's own `PostTrainingQuantization` (what PaddleSlim's PTQ wraps) runs the FP32
graph on calibration views, picks a scale per activation (by default `avg`: the mean of
the batches' maxima) and per weight channel, and saves a graph with quantize/dequantize
ops. Paddle Inference on CPU with oneDNN INT8 turned on (`Linewatch.precision: int8` in
the folder's inference.yml, which the classifier reads) fuses those into INT8 kernels;
without it the same graph runs in float with the quantisation simulated (correct, slow).

Calibration views are line views of training photos only (never validation photos),
made by the same `line_view` code the models were trained on. INT8 shifts the scores, so
the INT8 folder gets its own threshold. Given the `--folds` run the model was exported
from (`run_dir`), it is set as the FP32 one is: each of the run's fold heads, in an
INT8 copy of the model, scores the line views it was trained without, dealt into
simulated parts (`held_out_threshold`). Without the run, the FP32 threshold is carried
over by quantile matching on the calibration views (`matched_threshold`), which on the
moving line held the false-alarm budget less well.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paddle
import yaml

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import CONFIG_FILE, Classifier, read_model_info
from linewatch.pipeline.inference.predictor import int8_kernels
from linewatch.pipeline.training import data, line_views
from linewatch.pipeline.training.export import WithSoftmax, load_run, part_operating_point
from linewatch.pipeline.training.metrics import DefectReport
from linewatch.pipeline.training.static_runner import StaticRunner, export_layer
from linewatch.pipeline.training.teacher import (
    OOF_FILE,
    POOL_FILE,
    extract,
    fold_head_file,
    photo_folds,
)

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
    run_dir: Path | None = None,
) -> Path:
    """Write an INT8 copy of the classifier folder `model_dir` to `out_dir`, calibrated on
    line views of `photos` (grey uint8 [N, H, W]); returns `out_dir`. With `run_dir`, the
    `--folds` run `model_dir` was exported from, the threshold is set on held-out parts."""
    if algo not in ALGORITHMS:
        raise LinewatchError(f"quantisation algorithm {algo!r} is not one of {ALGORITHMS}")
    info, preprocessor, model_file, params_file = read_model_info(model_dir)
    if model_file.suffix != ".pdmodel":
        raise LinewatchError(f"{model_file} is not a legacy .pdmodel program; re-export it")
    width, height = preprocessor.output_size
    if width != height:
        raise LinewatchError(f"{model_dir} takes {width}x{height} input; square only")
    if run_dir is not None:
        require_held_out_run(run_dir)
    batches = calibration_batches(photos, width, batch_size, seed)
    _run_ptq(model_dir / "inference", out_dir / "inference", batches, algo)
    _write_config(model_dir, out_dir, algo=algo, photos=len(photos))
    threshold, source = _int8_threshold(model_dir, out_dir, batches, algo, run_dir)
    _write_config(
        model_dir, out_dir, algo=algo, photos=len(photos), threshold=threshold, source=source
    )
    return out_dir


def _int8_threshold(
    model_dir: Path, out_dir: Path, batches: list[np.ndarray], algo: str, run_dir: Path | None
) -> tuple[float, dict]:
    """The INT8 copy's threshold and how it was set (for its inference.yml)."""
    if run_dir is None:
        threshold = matched_threshold(model_dir, out_dir, np.concatenate(batches))
        return threshold, {"threshold_from": "quantile-matched on the calibration views"}
    report, how = held_out_threshold(
        run_dir=run_dir, fp32_dir=model_dir, batches=batches, algo=algo
    )
    return report.threshold, {
        "threshold_from": f"out-of-fold INT8 scores of the run's training photos as {how}",
        "selection_defect_recall": round(report.recall, 6),
        "selection_false_alarm_rate": round(report.false_alarm_rate, 6),
    }


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


def held_out_threshold(
    *, run_dir: Path, fp32_dir: Path, batches: list[np.ndarray], algo: str
) -> tuple[DefectReport, str]:
    """The INT8 model's part threshold, chosen as the FP32 model's is: each fold head on
    the run's trunk, exported and quantised exactly as the model is (same calibration,
    same INT8 kernels), scores the line views of the photos it was trained without, and
    the threshold holds the FP32 model's false-alarm budget on those views dealt into
    parts. (The trunk's features quantised on their own are not enough: oneDNN runs the
    whole INT8 graph differently from a trunk graph plus a float head.)"""
    config, split, network = load_run(run_dir)
    with np.load(run_dir / OOF_FILE) as stored:
        targets, view_photo = stored["targets"], stored["view_photo"]
    with np.load(run_dir / POOL_FILE) as stored:
        views = stored["views"]
    extra = yaml.safe_load((fp32_dir / CONFIG_FILE).read_text()).get("Linewatch", {})
    normal = split.labels.index(_normal_label(extra))
    fold = photo_folds(targets, config.folds, config.seed)[view_photo]
    mass = np.zeros(len(views), np.float32)
    for k in range(config.folds):
        network.head.set_state_dict(paddle.load(str(fold_head_file(run_dir, k))))
        classifier = WithSoftmax(network, float(extra.get("calibration_temperature", 1.0)))
        with tempfile.TemporaryDirectory() as tmp:
            prefix = export_layer(classifier, config.image_size, Path(tmp) / "fp32")
            _run_ptq(prefix, Path(tmp) / "int8", batches, algo)
            runner = StaticRunner(Path(tmp) / "int8", int8=True)
            probs = extract(runner, views[fold == k], run_dir, f"INT8 fold {k + 1} scores")
        mass[fold == k] = 1 - probs[:, normal]
    return part_operating_point(
        mass,
        view_photo,
        targets,
        normal=normal,
        max_false_alarms=float(extra.get("max_false_alarms", 0.01)),
    )


def _normal_label(extra: dict) -> str:
    normal = extra.get("normal_labels") or []
    if len(normal) != 1:
        raise LinewatchError("a held-out INT8 threshold needs exactly one normal label")
    return normal[0]


def require_held_out_run(run_dir: Path) -> None:
    """A clear error, before any work, unless `run_dir` is a `--folds` run that kept
    what the held-out INT8 threshold needs."""
    config_file = run_dir / "config.json"
    folds = json.loads(config_file.read_text()).get("folds", 0) if config_file.exists() else 0
    needed = [config_file, run_dir / OOF_FILE, run_dir / POOL_FILE]
    needed += [fold_head_file(run_dir, k) for k in range(folds)]
    missing = [str(path) for path in needed if not path.exists()]
    if folds < 2 or missing:
        raise LinewatchError(
            f"run folder {run_dir} cannot set a held-out INT8 threshold: it needs a "
            f"`--folds` run that kept its fold heads (missing: {', '.join(missing) or '--folds'});"
            " retrain with --folds 5, or quantise without --run-dir"
        )


def _run_ptq(source: Path, target: Path, batches: list[np.ndarray], algo: str) -> None:
    """Paddle's PTQ of the program `source`.pdmodel/.pdiparams into `target`.pdmodel/...,
    in a private scope (the model's weights never touch the global one)."""
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
                model_dir=str(source.parent),
                model_filename=f"{source.name}.pdmodel",
                params_filename=f"{source.name}.pdiparams",
                data_loader=feeds,
                batch_nums=len(batches),
                algo=algo,
                quantizable_op_type=QUANTIZED_OPS,
                onnx_format=True,
            )
            ptq.quantize()
            target.parent.mkdir(parents=True, exist_ok=True)
            ptq.save_quantized_model(
                str(target.parent),
                model_filename=f"{target.name}.pdmodel",
                params_filename=f"{target.name}.pdiparams",
            )
    finally:
        paddle.disable_static()


def _write_config(
    model_dir: Path,
    out_dir: Path,
    *,
    algo: str,
    photos: int,
    threshold: float | None = None,
    source: dict | None = None,
) -> None:
    """inference.yml of the INT8 copy; `threshold` and how it was set (`source`) once known."""
    config = yaml.safe_load((model_dir / CONFIG_FILE).read_text())
    # The gallery's embeddings are the FP32 graph's; INT8 shifts them, so the copy ships
    # none (its graph keeps the embedding output, which nothing then searches).
    config.pop("Gallery", None)
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
        "int8_kernels": int8_kernels(),  # the classifier refuses the folder on other CPUs
    }
    if threshold is not None:
        extra["quantization"]["fp32_defect_threshold"] = extra.get("defect_threshold")
        extra["quantization"].update(source or {})
        extra["defect_threshold"] = round(threshold, 6)
    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
