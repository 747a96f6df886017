"""Paddle Inference predictors, made one way for every model kind: the process's only
paddle import on the streaming path, device choice, oneDNN or TensorRT, batch buckets.

One predictor per process, created once; batches are padded up to a few bucket sizes
that are all warmed at start, so no request pays the first-run cost of a new shape.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.pipeline.errors import ModelError, one_line


def import_paddle() -> Any:
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
    paddle = import_paddle()

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ModelError(
            "inference.device is 'gpu' but paddle has no CUDA device here; "
            "install paddlepaddle-gpu on a GPU host or set device: cpu"
        )
    return "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_kernels() -> str:
    """Which oneDNN INT8 convolutions this CPU runs: `vnni` (u8 x s8 products summed in
    32 bits: exact) or `no-vnni` (AVX2 / AVX-512 without VNNI: pairs summed in 16 bits,
    so oneDNN halves the weights to avoid saturation). The two give different scores
    for the same INT8 graph; for this project's default model, validation macro-F1 0.920
    with VNNI and 0.779 without. Read from /proc/cpuinfo (no paddle import) on Linux."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        vnni = import_paddle().base.core.supports_vnni()
    else:
        vnni = bool(flags.intersection(VNNI_FLAGS))
    return "vnni" if vnni else "no-vnni"


def batch_buckets(max_batch: int) -> list[int]:
    """Padded batch sizes: powers of two below `max_batch`, then `max_batch`."""
    buckets, size = [], 1
    while size < max_batch:
        buckets.append(size)
        size *= 2
    return [*buckets, max_batch]


def pad_to_bucket(batch: np.ndarray, buckets: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """`batch` with `fill` rows added up to the smallest bucket that holds it."""
    size = next(b for b in buckets if b >= len(batch))
    if size == len(batch):
        return batch
    padding = np.full((size - len(batch), *batch.shape[1:]), fill, batch.dtype)
    return np.concatenate([batch, padding])


@dataclass(frozen=True)
class TensorRT:
    """TensorRT FP16 settings: per input name, its smallest and largest shape."""

    shapes: dict[str, tuple[list[int], list[int]]]
    max_batch: int
    min_subgraph_size: int = 3


def create_predictor(
    model_file: Path,
    params_file: Path,
    threads: int,
    device: str,
    tensorrt: TensorRT | None,
    int8: bool = False,
) -> Any:
    """A Paddle Inference predictor (oneDNN on CPU, INT8 kernels for a quantised graph with
    `int8`; TensorRT on GPU when given, where a quantised graph runs its fake-quant ops)."""
    inference = import_paddle().inference

    config = inference.Config(str(model_file), str(params_file))
    if device == "gpu":
        config.enable_use_gpu(512, 0)
        if tensorrt is not None:
            _enable_tensorrt(config, inference, tensorrt)
    else:
        config.disable_gpu()
        config.enable_mkldnn()
        if int8:
            config.enable_mkldnn_int8()
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
