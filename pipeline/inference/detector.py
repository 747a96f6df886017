"""PaddleDetection exported model folders, read without importing paddledet.

A PaddleDetection export (`tools/export_model.py`) is `model.pdmodel` (or `model.json`)
+ `model.pdiparams` + `infer_cfg.yml`. The program takes `image` (N,3,H,W),
`scale_factor` (N,2: resized / original, y then x) and sometimes `im_shape` (N,2: the
resized h, w); with NMS in the program (the default export) it returns `bbox` (M,6:
class, score, x1, y1, x2, y2 in the original image's pixels) and `bbox_num` (N,).
Its predictor comes from predictor.py, shared with the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from linewatch.pipeline.errors import ModelError
from linewatch.pipeline.inference.predictor import (
    TensorRT,
    batch_buckets,
    create_predictor,
    pad_to_bucket,
    pick_device,
)
from linewatch.pipeline.inference.preprocess import Preprocessor

DETECTION_MODEL_FILES = ("model.pdmodel", "model.json")
DETECTION_PARAMS_FILE = "model.pdiparams"
DETECTION_CONFIG_FILE = "infer_cfg.yml"
IMAGE_INPUTS = ("image", "x")
SUPPORTED_OPS = ("Resize", "NormalizeImage", "Permute", "PadStride")
EXPORT_HINT = (
    "copy the complete folder written by PaddleDetection's tools/export_model.py "
    "(model.pdmodel or model.json, model.pdiparams, infer_cfg.yml)"
)


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    version: str
    arch: str
    labels: tuple[str, ...]
    normal_labels: tuple[str, ...]  # classes whose boxes never make a frame defective
    draw_threshold: float  # boxes scoring below it are dropped (PaddleDetection's meaning)
    defect_threshold: float  # a box of a defect class at or above it makes the frame defective
    min_subgraph_size: int


@dataclass(frozen=True)
class DetectorFolder:
    info: DetectorInfo
    preprocessor: Preprocessor
    padded_size: tuple[int, int]  # (width, height) after PadStride
    model_file: Path
    params_file: Path


def read_detector_folder(folder: Path) -> DetectorFolder:
    """Check a PaddleDetection folder and parse its infer_cfg.yml; ModelError says what
    is missing and what to do."""
    model_file, params_file = _detector_files(folder)
    path = folder / DETECTION_CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text()) or {}
        info = _detector_info(config, folder)
        preprocessor, padded = _preprocess(config["Preprocess"])
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ModelError(f"{path} is not a valid PaddleDetection config: {exc!r}") from exc
    return DetectorFolder(info, preprocessor, padded, model_file, params_file)


def _detector_files(folder: Path) -> tuple[Path, Path]:
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; pass an exported model folder")
    model_file = next((folder / n for n in DETECTION_MODEL_FILES if (folder / n).is_file()), None)
    missing = [
        n for n in (DETECTION_CONFIG_FILE, DETECTION_PARAMS_FILE) if not (folder / n).is_file()
    ]
    if model_file is None:
        missing.insert(0, " or ".join(DETECTION_MODEL_FILES))
    if missing:
        raise ModelError(
            f"detection model folder {folder} is missing {', '.join(missing)}; {EXPORT_HINT}"
        )
    assert model_file is not None
    return model_file, folder / DETECTION_PARAMS_FILE


def _detector_info(config: dict[str, Any], folder: Path) -> DetectorInfo:
    mode = config.get("mode", "paddle")
    if mode != "paddle":
        raise ValueError(f"mode {mode!r}: only Paddle Inference exports (mode: paddle) load here")
    labels = config["label_list"]
    if not labels:
        raise ValueError("label_list is empty")
    draw_threshold = float(config.get("draw_threshold", 0.5))
    extra = config.get("Linewatch") or {}
    return DetectorInfo(
        name=str(extra.get("model_name", folder.name)),
        version=str(extra.get("model_version", "unversioned")),
        arch=str(config.get("arch", "unknown")),
        labels=tuple(str(label) for label in labels),
        normal_labels=tuple(str(label) for label in extra.get("normal_labels", [])),
        draw_threshold=draw_threshold,
        defect_threshold=float(extra.get("defect_threshold", draw_threshold)),
        min_subgraph_size=int(config.get("min_subgraph_size", 3)),
    )


def _preprocess(ops: Sequence[dict[str, Any]]) -> tuple[Preprocessor, tuple[int, int]]:
    """The fixed-size pipeline (Resize keep_ratio false, NormalizeImage, Permute,
    PadStride) as one batch Preprocessor, and the padded input (width, height)."""
    settings: dict[str, Any] = {"alpha": np.ones(3, np.float32), "beta": np.zeros(3, np.float32)}
    stride = 0
    for op in ops:
        kind = op.get("type")
        if kind not in SUPPORTED_OPS:
            raise ValueError(f"unsupported preprocess op {kind!r}; supported: {SUPPORTED_OPS}")
        if kind == "Resize":
            settings.update(_resize(op))
        elif kind == "NormalizeImage":
            settings.update(_normalize(op))
        elif kind == "PadStride":
            stride = int(op.get("stride", 0))
    if "resize" not in settings:
        raise ValueError("Preprocess needs a Resize to a fixed target_size")
    width, height = settings["resize"]
    return Preprocessor(**settings), (_round_up(width, stride), _round_up(height, stride))


def _resize(op: dict[str, Any]) -> dict[str, Any]:
    if op.get("keep_ratio", True):
        raise ValueError(
            "Resize keep_ratio: true gives every frame its own input size; export the model "
            "with a fixed input size (keep_ratio: false, e.g. PicoDet / PP-YOLOE configs)"
        )
    size = op["target_size"]
    height, width = (size, size) if isinstance(size, int) else size
    interp = int(op.get("interp", 1))
    if interp not in range(5):
        raise ValueError(f"Resize interp {interp} is not a cv2 interpolation code 0..4")
    return {"resize": (int(width), int(height)), "interpolation": interp}


def _normalize(op: dict[str, Any]) -> dict[str, Any]:
    scale = 1 / 255 if op.get("is_scale", True) else 1.0
    if op.get("norm_type", "mean_std") == "none":
        return {"alpha": np.full(3, scale, np.float32), "beta": np.zeros(3, np.float32)}
    mean = np.asarray(op["mean"], np.float32)
    std = np.asarray(op["std"], np.float32)
    return {"alpha": (scale / std).astype(np.float32), "beta": (-mean / std).astype(np.float32)}


def _round_up(value: int, stride: int) -> int:
    return value if stride <= 0 else -(-value // stride) * stride


class Detector:
    """A warmed Paddle predictor returning boxes for RGB images of any size."""

    def __init__(
        self,
        folder: Path,
        threads: int = 2,
        device: str = "auto",
        tensorrt: bool = False,
        max_batch: int = 32,
    ) -> None:
        found = read_detector_folder(folder)
        self.info, self.preprocessor = found.info, found.preprocessor
        self.input_size = found.padded_size
        self.device = pick_device(device)
        trt = self._tensorrt(max_batch) if tensorrt else None
        self._predictor = create_predictor(
            found.model_file, found.params_file, threads, self.device, trt
        )
        self._inputs = {n: self._predictor.get_input_handle(n) for n in self._input_names()}
        outputs = self._predictor.get_output_names()
        self._outputs = [self._predictor.get_output_handle(name) for name in outputs[:2]]
        # Without a bbox_num output the boxes of a batch cannot be told apart.
        self.buckets = batch_buckets(max_batch) if len(outputs) > 1 else [1]
        self._check_outputs()

    def warm_up(self) -> None:
        width, height = self.input_size
        for size in self.buckets:
            self._run(
                np.zeros((size, 3, height, width), np.float32), np.ones((size, 2), np.float32)
            )

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per RGB uint8 image, its boxes [K, 6] (class, score, x1, y1, x2, y2) in the
        image's own pixels, clipped to it; NMS padding rows (class < 0) dropped."""
        if not images:
            return []
        batch = self._pad_to_input(self.preprocessor.batch(images))
        width, height = self.preprocessor.output_size
        scales = np.array([[height / i.shape[0], width / i.shape[1]] for i in images], np.float32)
        step = self.buckets[-1]
        boxes: list[np.ndarray] = []
        for start in range(0, len(images), step):
            boxes += self._run_padded(batch[start : start + step], scales[start : start + step])
        return [_clip(rows, image.shape) for rows, image in zip(boxes, images, strict=True)]

    def _input_names(self) -> list[str]:
        names = list(self._predictor.get_input_names())
        known = {*IMAGE_INPUTS, "scale_factor", "im_shape"}
        unknown = [name for name in names if name not in known]
        if unknown or not any(name in IMAGE_INPUTS for name in names):
            raise ModelError(
                f"detection model inputs {names} are not image/scale_factor/im_shape; "
                "only PaddleDetection exports of single-image detectors load here"
            )
        return names

    def _pad_to_input(self, batch: np.ndarray) -> np.ndarray:
        width, height = self.input_size
        if batch.shape[2:] == (height, width):
            return batch
        padded = np.zeros((len(batch), 3, height, width), np.float32)
        padded[:, :, : batch.shape[2], : batch.shape[3]] = batch
        return padded

    def _run_padded(self, batch: np.ndarray, scales: np.ndarray) -> list[np.ndarray]:
        count = len(batch)
        batch = pad_to_bucket(batch, self.buckets)
        scales = pad_to_bucket(scales, self.buckets, fill=1.0)
        return _split(*self._run(batch, scales))[:count]

    def _run(self, batch: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        width, height = self.preprocessor.output_size
        feeds = {
            "scale_factor": scales,
            "im_shape": np.tile(np.array([[height, width]], np.float32), (len(batch), 1)),
        }
        for name, handle in self._inputs.items():
            value = feeds.get(name, batch)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        self._predictor.run()
        boxes = self._outputs[0].copy_to_cpu()
        counts = self._outputs[1].copy_to_cpu() if len(self._outputs) > 1 else [len(boxes)]
        return boxes, np.asarray(counts, np.int64).reshape(-1)

    def _check_outputs(self) -> None:
        width, height = self.input_size
        try:
            boxes, counts = self._run(
                np.zeros((1, 3, height, width), np.float32), np.ones((1, 2), np.float32)
            )
        except Exception as exc:  # paddle raises many types for a shape mismatch
            raise ModelError(
                f"detection model rejects a 1x3x{height}x{width} input: {exc}"
            ) from exc
        if boxes.ndim != 2 or boxes.shape[1] != 6 or counts.shape != (1,):
            raise ModelError(
                f"detection model outputs {boxes.shape} and {counts.shape}, expected boxes "
                "(M, 6) [class, score, x1, y1, x2, y2] and a count per image; export it with "
                "NMS in the program (PaddleDetection's default, not export.post_process: false)"
            )

    def _tensorrt(self, max_batch: int) -> TensorRT:
        width, height = self.input_size
        image = ([1, 3, height, width], [max_batch, 3, height, width])
        pair = ([1, 2], [max_batch, 2])
        shapes = {"image": image, "x": image, "scale_factor": pair, "im_shape": pair}
        return TensorRT(shapes, max_batch, self.info.min_subgraph_size)


def _split(boxes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    ends = np.cumsum(counts)
    return [boxes[end - count : end] for count, end in zip(counts, ends, strict=True)]


def _clip(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # `~(class < 0)` rather than `class >= 0`: a NaN row stays, so it is reported.
    rows = rows[~(rows[:, 0] < 0)].astype(np.float32)
    height, width = shape[:2]
    rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, width)
    rows[:, [3, 5]] = np.clip(rows[:, [3, 5]], 0, height)
    return rows
