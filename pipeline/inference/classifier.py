"""Paddle Inference classifier loaded from an exported model folder.

The only module of the streaming path that imports paddle. One predictor per
process, created once; batches are padded up to a few bucket sizes that are
all warmed at start, so no request pays the first-run cost of a new shape.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from linewatch.pipeline.errors import ModelError, one_line
from linewatch.pipeline.inference.preprocess import Preprocessor

log = logging.getLogger(__name__)

MODEL_FILES = ("inference.pdmodel", "inference.json")
PARAMS_FILE = "inference.pdiparams"
CONFIG_FILE = "inference.yml"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    labels: tuple[str, ...]
    normal_labels: tuple[str, ...]
    defect_threshold: float
    topk: int


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
    )


def _read_class_map(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line.split(maxsplit=1)[1] for line in lines if line.strip()]


def batch_buckets(max_batch: int) -> list[int]:
    """Padded batch sizes: powers of two below `max_batch`, then `max_batch`."""
    buckets, size = [], 1
    while size < max_batch:
        buckets.append(size)
        size *= 2
    return [*buckets, max_batch]


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
            model_file, params_file, threads, self.device, trt if tensorrt else None
        )
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])
        self._check_output_width(folder)

    def warm_up(self) -> None:
        width, height = self.preprocessor.output_size
        for size in self.buckets:
            self._run(np.zeros((size, 3, height, width), np.float32))

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [N, classes] for RGB uint8 images of any size."""
        if not images:
            return np.zeros((0, len(self.info.labels)), np.float32)
        return self.infer(self.preprocessor.batch(images))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for an already preprocessed float32 NCHW batch."""
        step = self.buckets[-1]
        chunks = [self._run_padded(batch[i : i + step]) for i in range(0, len(batch), step)]
        return _as_probabilities(np.concatenate(chunks))

    def _run_padded(self, batch: np.ndarray) -> np.ndarray:
        count = len(batch)
        size = next(b for b in self.buckets if b >= count)
        if size > count:
            padding = np.zeros((size - count, *batch.shape[1:]), np.float32)
            batch = np.concatenate([batch, padding])
        return self._run(batch)[:count]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(batch)
        self._predictor.run()
        return self._output.copy_to_cpu()

    def _check_output_width(self, folder: Path) -> None:
        width, height = self.preprocessor.output_size
        try:
            out = self._run(np.zeros((1, 3, height, width), np.float32))
        except Exception as exc:  # paddle raises many types for a shape mismatch
            reason = one_line(exc)
            raise ModelError(
                f"model {folder} rejects a 1x3x{height}x{width} input, the size its "
                f"{CONFIG_FILE} preprocessing makes ({reason}); export the model for 3-channel "
                f"{width}x{height} RGB input or fix the PreProcess sizes"
            ) from exc
        if out.ndim != 2 or out.shape[1] != len(self.info.labels):
            raise ModelError(
                f"model output shape {out.shape} does not match {len(self.info.labels)} labels "
                "in inference.yml; the label list and the exported model disagree"
            )


def _as_probabilities(out: np.ndarray) -> np.ndarray:
    """Softmax when the model exported logits rather than probabilities."""
    out = out.astype(np.float32, copy=False)
    if out.size and (out.min() < 0 or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        out = shifted / shifted.sum(axis=1, keepdims=True)
    return out


def _import_paddle() -> Any:
    """paddle, imported without its start-up warnings (ccache, glog)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    # Intel OpenMP spins idle threads 200 ms after every predictor run; between
    # batches that burns a core the ingest and sink processes need (and slows
    # our own preprocessing), so threads sleep at once instead.
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import paddle
        import paddle.inference  # noqa: F401
    return paddle


def pick_device(device: str) -> str:
    paddle = _import_paddle()

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ModelError(
            "inference.device is 'gpu' but paddle has no CUDA device here; "
            "install paddlepaddle-gpu on a GPU host or set device: cpu"
        )
    return "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"


@dataclass(frozen=True)
class TensorRT:
    """TensorRT FP16 settings: per input name, its smallest and largest shape."""

    shapes: dict[str, tuple[list[int], list[int]]]
    max_batch: int
    min_subgraph_size: int = 3


def create_predictor(
    model_file: Path, params_file: Path, threads: int, device: str, tensorrt: TensorRT | None
) -> Any:
    """A Paddle Inference predictor (oneDNN on CPU; TensorRT on GPU when given)."""
    inference = _import_paddle().inference

    config = inference.Config(str(model_file), str(params_file))
    if device == "gpu":
        config.enable_use_gpu(512, 0)
        if tensorrt is not None:
            _enable_tensorrt(config, inference, tensorrt)
    else:
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
    config.switch_ir_optim(True)
    config.disable_glog_info()
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # paddle raises RuntimeError/ValueError/OSError here
        raise ModelError(f"paddle cannot load {model_file}: {one_line(exc)}") from exc


def _enable_tensorrt(config: Any, inference: Any, tensorrt: TensorRT) -> None:
    config.enable_tensorrt_engine(
        workspace_size=1 << 30,
        max_batch_size=tensorrt.max_batch,
        min_subgraph_size=tensorrt.min_subgraph_size,
        precision_mode=inference.PrecisionType.Half,
        use_static=True,
        use_calib_mode=False,
    )
    smallest = {name: low for name, (low, _) in tensorrt.shapes.items()}
    largest = {name: high for name, (_, high) in tensorrt.shapes.items()}
    config.set_trt_dynamic_shape_info(smallest, largest, largest)
