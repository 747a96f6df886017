"""Paddle Inference classifier loaded from an exported model folder (PaddleClas or
`linewatch export`: inference.yml + inference.pdmodel/json + inference.pdiparams).

Its predictor comes from predictor.py, shared with the detector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from linewatch.pipeline.errors import ModelError, one_line
from linewatch.pipeline.gallery.settings import GallerySettings, gallery_settings
from linewatch.pipeline.inference.predictor import (
    TensorRT,
    batch_buckets,
    create_predictor,
    int8_kernels,
    pad_to_bucket,
    pick_device,
)
from linewatch.pipeline.inference.preprocess import Preprocessor

log = logging.getLogger(__name__)

MODEL_FILES = ("inference.pdmodel", "inference.json")
PARAMS_FILE = "inference.pdiparams"
CONFIG_FILE = "inference.yml"
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    labels: tuple[str, ...]
    normal_labels: tuple[str, ...]
    defect_threshold: float
    topk: int
    crop_margin: float | None = None  # the part-view margin it was trained with (parts mode)
    precision: str = "fp32"  # "int8": a quantised graph, run with oneDNN INT8 on CPU
    int8_kernels: str | None = None  # INT8: the CPU kernels its threshold was set with
    gallery: GallerySettings | None = None  # its `Gallery:` section (graph output 1 + file)


def read_model_info(folder: Path) -> tuple[ModelInfo, Preprocessor, Path, Path]:
    """Check the folder and parse its inference.yml; ModelError says what is missing."""
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; pass an exported model folder")
    model_file = next((folder / n for n in MODEL_FILES if (folder / n).is_file()), None)
    missing = [n for n in (CONFIG_FILE, PARAMS_FILE) if not (folder / n).is_file()]
    if model_file is None:
        missing.insert(0, " or ".join(MODEL_FILES))
    if missing:
        raise ModelError(
            f"model folder {folder} is missing {', '.join(missing)}; re-export it with "
            "`linewatch export` or copy the complete Paddle Inference folder"
        )
    try:
        config = yaml.safe_load((folder / CONFIG_FILE).read_text()) or {}
        info = _model_info(config, folder)
        preprocessor = Preprocessor.from_ops(config["PreProcess"]["transform_ops"])
        preprocessor.output_size  # noqa: B018 (raises for a model without a fixed input size)
    except (KeyError, TypeError, ValueError, OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{folder / CONFIG_FILE} is not a valid model config: {exc!r}") from exc
    if info.precision == "int8":
        check_int8_kernels(folder, info.int8_kernels)
    return info, preprocessor, model_file, folder / PARAMS_FILE


def _post_process(config: dict[str, Any]) -> dict[str, Any]:
    """The Topk settings: PaddleClas exports nest them under the op name
    (`PostProcess: {Topk: {topk, label_list}}`); its deploy configs and ours keep them
    flat (`PostProcess: {name: Topk, topk, class_id_map_file | label_list}`)."""
    post = config.get("PostProcess") or {}
    if isinstance(post.get("Topk"), dict):
        return post["Topk"]
    if post.get("name", "Topk") != "Topk":
        raise ValueError(f"PostProcess {post['name']!r} is not a Topk classifier post-process")
    return post


def _model_info(config: dict[str, Any], folder: Path) -> ModelInfo:
    post = _post_process(config)
    labels = post.get("label_list")
    if labels is None and post.get("class_id_map_file"):
        labels = _read_class_map(folder / Path(post["class_id_map_file"]).name)
    if not labels:
        raise ValueError("PostProcess label_list (or class_id_map_file) is required")
    extra = config.get("Linewatch") or {}
    glob = config.get("Global") or {}
    return ModelInfo(
        name=str(glob.get("model_name", folder.name)),
        version=str(glob.get("model_version", "unversioned")),
        labels=tuple(str(label) for label in labels),
        normal_labels=tuple(str(label) for label in extra.get("normal_labels", ["free"])),
        defect_threshold=float(extra.get("defect_threshold", 0.5)),
        topk=int(post.get("topk", 5)),
        crop_margin=float(extra["crop_margin"]) if "crop_margin" in extra else None,
        precision=_precision(extra),
        int8_kernels=(extra.get("quantization") or {}).get("int8_kernels"),
        gallery=gallery_settings(config),
    )


def _precision(extra: dict[str, Any]) -> str:
    precision = str(extra.get("precision", "fp32"))
    if precision not in PRECISIONS:
        raise ValueError(f"Linewatch.precision {precision!r} is not one of {PRECISIONS}")
    return precision


def _read_class_map(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line.split(maxsplit=1)[1] for line in lines if line.strip()]


def check_int8_kernels(folder: Path, recorded: str | None) -> None:
    """An INT8 folder's threshold holds only on CPUs with the INT8 kernels it was set
    with (`int8_kernels`): refuse it elsewhere rather than judge parts with it."""
    here = int8_kernels()
    if recorded == here:
        return
    made = f"set with {recorded!r} INT8 kernels" if recorded else "not tied to a CPU kind"
    raise ModelError(
        f"{folder} is an INT8 model whose threshold was {made}, but this CPU runs "
        f"{here!r} INT8 kernels, which score the same graph differently: use the FP32 "
        "folder here, or quantise on this kind of CPU (linewatch quantize … --run-dir RUN)"
    )


class Classifier:
    """A warmed Paddle predictor returning class probabilities for RGB images."""

    def __init__(
        self,
        folder: Path,
        threads: int = 2,
        device: str = "auto",
        tensorrt: bool = False,
        max_batch: int = 32,
    ) -> None:
        self.info, self.preprocessor, model_file, params_file = read_model_info(folder)
        self.buckets = batch_buckets(max_batch)
        self.device = pick_device(device)
        width, height = self.preprocessor.output_size
        trt = TensorRT({"x": ([1, 3, height, width], [max_batch, 3, height, width])}, max_batch)
        self._predictor = create_predictor(
            model_file,
            params_file,
            threads,
            self.device,
            trt if tensorrt else None,
            int8=self.info.precision == "int8",
        )
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        # Output 0: class probabilities; output 1 (a model with a gallery): the view embedding.
        names = self._predictor.get_output_names()[:2]
        self._outputs = [self._predictor.get_output_handle(name) for name in names]
        self.embedding_size: int | None = None  # D when the graph has the embedding output
        self._check_outputs(folder)

    def warm_up(self) -> None:
        width, height = self.preprocessor.output_size
        for size in self.buckets:
            self._run(np.zeros((size, 3, height, width), np.float32))

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [N, classes] for RGB uint8 images of any size."""
        return self.predict_with_embeddings(images)[0]

    def predict_with_embeddings(
        self, images: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities [N, classes] and, when the graph has the embedding output, the
        L2-normalised view embeddings [N, D] (else None), from one predictor call."""
        if not images:
            return self._empty()
        return self.infer_with_embeddings(self.preprocessor.batch(images))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for an already preprocessed float32 NCHW batch."""
        return self.infer_with_embeddings(batch)[0]

    def infer_with_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and embeddings (or None) for a preprocessed float32 NCHW batch."""
        if not len(batch):
            return self._empty()
        step = self.buckets[-1]
        chunks = [self._run_padded(batch[i : i + step]) for i in range(0, len(batch), step)]
        probs = _as_probabilities(np.concatenate([chunk[0] for chunk in chunks]))
        if self.embedding_size is None:
            return probs, None
        return probs, np.concatenate([chunk[1] for chunk in chunks]).astype(np.float32)

    def _empty(self) -> tuple[np.ndarray, np.ndarray | None]:
        probs = np.zeros((0, len(self.info.labels)), np.float32)
        size = self.embedding_size
        return probs, None if size is None else np.zeros((0, size), np.float32)

    def _run_padded(self, batch: np.ndarray) -> list[np.ndarray]:
        return [out[: len(batch)] for out in self._run(pad_to_bucket(batch, self.buckets))]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(batch)
        self._predictor.run()
        return [output.copy_to_cpu() for output in self._outputs]

    def _check_outputs(self, folder: Path) -> None:
        width, height = self.preprocessor.output_size
        try:
            outputs = self._run(np.zeros((1, 3, height, width), np.float32))
        except Exception as exc:  # paddle raises many types for a shape mismatch
            reason = one_line(exc)
            raise ModelError(
                f"model {folder} rejects a 1x3x{height}x{width} input, the size its "
                f"{CONFIG_FILE} preprocessing makes ({reason}); export the model for 3-channel "
                f"{width}x{height} RGB input or fix the PreProcess sizes"
            ) from exc
        out = outputs[0]
        if out.ndim != 2 or out.shape[1] != len(self.info.labels):
            raise ModelError(
                f"model output shape {out.shape} does not match {len(self.info.labels)} labels "
                "in inference.yml; the label list and the exported model disagree"
            )
        if len(outputs) > 1:
            self.embedding_size = _embedding_size(outputs[1], folder)
        gallery = self.info.gallery
        if gallery is not None and gallery.embedding_size != self.embedding_size:
            raise ModelError(
                f"{folder / CONFIG_FILE} has a Gallery of {gallery.embedding_size}-d embeddings "
                f"but the graph's embedding output is {self.embedding_size or 'absent'}; "
                "re-export the model (linewatch export) or remove the Gallery section"
            )


def _embedding_size(embedding: np.ndarray, folder: Path) -> int:
    if embedding.ndim != 2 or embedding.shape[0] != 1:
        raise ModelError(
            f"model {folder} has a second output of shape {embedding.shape}, not the [N, D] "
            "view embedding a gallery needs; re-export it with `linewatch export`"
        )
    return int(embedding.shape[1])


def _as_probabilities(out: np.ndarray) -> np.ndarray:
    """Softmax when the model exported logits rather than probabilities."""
    out = out.astype(np.float32, copy=False)
    if out.size and (out.min() < 0 or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        out = shifted / shifted.sum(axis=1, keepdims=True)
    return out
