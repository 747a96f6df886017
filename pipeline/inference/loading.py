"""Loading a model folder: the one factory that picks a Classifier or a Detector from
the folder's files, and the check of a folder without loading paddle."""

from __future__ import annotations

from pathlib import Path

from linewatch.pipeline.errors import ModelError
from linewatch.pipeline.inference.classifier import (
    CONFIG_FILE,
    MODEL_FILES,
    Classifier,
    ModelInfo,
    read_model_info,
)
from linewatch.pipeline.inference.detector import (
    DETECTION_CONFIG_FILE,
    DETECTION_MODEL_FILES,
    DETECTION_PARAMS_FILE,
    Detector,
    DetectorInfo,
    read_detector_folder,
)

Model = Classifier | Detector


def is_detection_folder(folder: Path) -> bool:
    """A PaddleDetection export (infer_cfg.yml or model.*) rather than a classifier
    (inference.yml + inference.*: PaddleClas or `linewatch export`)."""
    names = (DETECTION_CONFIG_FILE, *DETECTION_MODEL_FILES)
    return any((folder / name).is_file() for name in names) and not (folder / CONFIG_FILE).is_file()


def describe_model(folder: Path) -> ModelInfo | DetectorInfo:
    """Check a classifier or detector folder without loading paddle; ModelError if broken
    (or INT8 from another kind of CPU)."""
    if is_detection_folder(folder):
        return read_detector_folder(folder).info
    if folder.is_dir() and not any((folder / n).is_file() for n in (CONFIG_FILE, *MODEL_FILES)):
        raise ModelError(
            f"model folder {folder} holds no model: expected a classifier ({CONFIG_FILE} + "
            f"{' or '.join(MODEL_FILES)} + inference.pdiparams) or a detector "
            f"({DETECTION_CONFIG_FILE} + {' or '.join(DETECTION_MODEL_FILES)} + "
            f"{DETECTION_PARAMS_FILE})"
        )
    return read_model_info(folder)[0]


def load_model(
    folder: Path,
    threads: int = 2,
    device: str = "auto",
    tensorrt: bool = False,
    max_batch: int = 32,
) -> Model:
    """The Classifier or Detector the folder's files call for (not yet warmed)."""
    describe_model(folder)
    kind = Detector if is_detection_folder(folder) else Classifier
    return kind(folder, threads=threads, device=device, tensorrt=tensorrt, max_batch=max_batch)
