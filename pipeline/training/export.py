"""Export trained weights as a Paddle Inference folder the inference worker loads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import paddle
import yaml
from paddle.static import InputSpec

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import data
from linewatch.pipeline.training.metrics import pick_threshold
from linewatch.pipeline.training.nets import build_network
from linewatch.pipeline.training.train import NORMAL_LABEL, TrainConfig, predict_probs

MIN_DEFECT_RECALL = 0.99


class WithSoftmax(paddle.nn.Layer):
    def __init__(self, network: paddle.nn.Layer) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.nn.functional.softmax(self.network(x), axis=1)


def load_run(run_dir: Path) -> tuple[TrainConfig, data.Split, paddle.nn.Layer]:
    """The run's config, split and best EMA network (eval mode)."""
    for name in ("config.json", "split.json", "best.pdparams"):
        if not (run_dir / name).exists():
            raise LinewatchError(f"run folder {run_dir} has no {name}; train first")
    config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    split = data.Split.load(run_dir / "split.json")
    network = build_network(config.arch, len(split.labels))
    network.set_state_dict(paddle.load(str(run_dir / "best.pdparams")))
    network.eval()
    return config, split, network


def inference_config(
    config: TrainConfig, labels: tuple[str, ...], threshold: float, version: str
) -> dict:
    size = config.image_size
    return {
        "Global": {
            "model_name": f"linewatch-{config.arch}",
            "model_version": version,
            "arch": config.arch,
            "image_size": size,
        },
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"to_rgb": True, "channel_first": False}},
                {"ResizeImage": {"size": [size, size], "interpolation": "area"}},
                {
                    "NormalizeImage": {
                        "scale": 1 / 255,
                        "mean": list(data.MEAN_RGB),
                        "std": list(data.STD_RGB),
                        "order": "",
                    }
                },
                {"ToCHWImage": None},
            ]
        },
        "PostProcess": {"name": "Topk", "topk": min(5, len(labels)), "label_list": list(labels)},
        "Linewatch": {
            "normal_labels": [NORMAL_LABEL] if NORMAL_LABEL in labels else [],
            "defect_threshold": round(float(threshold), 6),
        },
    }


def choose_threshold(network: paddle.nn.Layer, split: data.Split, size: int) -> float:
    """Largest threshold on 1 - P(free) with validation defect recall >= 0.99."""
    if NORMAL_LABEL not in split.labels:
        return 0.5
    probs = predict_probs(network, data.load_images(split.val, size))
    normal = split.labels.index(NORMAL_LABEL)
    is_defect = np.array([index != normal for _, index in split.val])
    return min(0.5, pick_threshold(1 - probs[:, normal], is_defect, MIN_DEFECT_RECALL))


def export_run(run_dir: Path, out_dir: Path) -> float:
    """Write `out_dir` (program, params, inference.yml); returns the max abs difference
    between the exported predictor and the training network on validation images."""
    config, split, network = load_run(run_dir)
    size = config.image_size
    threshold = choose_threshold(network, split, size)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = [InputSpec([None, 3, size, size], "float32", "x")]
    paddle.jit.save(WithSoftmax(network), str(out_dir / "inference"), input_spec=spec)
    (out_dir / "inference.pdiparams.info").unlink(missing_ok=True)
    version = time.strftime("%Y.%m.%d-%H%M%S")
    config_yaml = inference_config(config, split.labels, threshold, version)
    (out_dir / "inference.yml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
    return verify_export(network, out_dir, split, size)


def verify_export(network: paddle.nn.Layer, out_dir: Path, split: data.Split, size: int) -> float:
    grey = data.load_images(split.val[:32], size)
    rgb = [np.repeat(image[..., None], 3, axis=2) for image in grey]
    exported = Classifier(out_dir, max_batch=32).predict(rgb)
    return float(np.abs(exported - predict_probs(network, grey)).max())
