"""Export trained weights as a Paddle Inference folder the inference worker loads."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import paddle
import yaml

from linewatch.pipeline.config import VerdictSettings
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import LITE_ARCHITECTURES, data
from linewatch.pipeline.training.embedding import (
    load_embedding_head,
    load_held_out,
    load_source,
    unit_rows,
)
from linewatch.pipeline.training.gallery_export import gallery_section
from linewatch.pipeline.training.metrics import (
    DefectReport,
    defect_report,
    fit_temperature,
    part_scores,
    recall_at_false_alarms,
    threshold_for_false_alarms,
)
from linewatch.pipeline.training.nets import build_network
from linewatch.pipeline.training.static_runner import export_layer
from linewatch.pipeline.training.teacher import OOF_FILE
from linewatch.pipeline.training.train import NORMAL_LABEL, TrainConfig
from linewatch.pipeline.video.crop import DEFAULT_MARGIN

MAX_FALSE_ALARMS = 0.01
# Simulated parts for the operating point: about the views the moving line infers per part
# (477 views of 120 parts on the validation line) and the sink's default `verdict.top_views`.
PART_VIEWS = 4
PART_TOP_VIEWS = VerdictSettings().top_views


class WithSoftmax(paddle.nn.Layer):
    """The network with its calibration temperature and softmax baked in: the exported
    graph outputs calibrated probabilities, as the inference code expects."""

    def __init__(self, network: paddle.nn.Layer, temperature: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.inverse_temperature = 1.0 / float(temperature)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.nn.functional.softmax(self.network(x) * self.inverse_temperature, axis=1)


class WithEmbedding(WithSoftmax):
    """The calibrated probabilities (output 0) and the L2-normalised view embedding
    (output 1) from one forward pass: the embedding head's output on the features the
    classifier reads, or without a head those features themselves (PP-LCNet's pooled
    pre-fc features, a Lite0 head's standardised pooled taps)."""

    def __init__(
        self,
        network: paddle.nn.Layer,
        temperature: float = 1.0,
        embedding_head: paddle.nn.Layer | None = None,
    ) -> None:
        super().__init__(network, temperature)
        self.embedding_head = embedding_head

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        logits, features = self.network.forward_with_features(x)
        probs = paddle.nn.functional.softmax(logits * self.inverse_temperature, axis=1)
        if self.embedding_head is not None:
            features = self.embedding_head(features)
        return probs, unit_rows(features)


@dataclass(frozen=True)
class OperatingPoint:
    temperature: float
    threshold: float
    max_false_alarms: float
    recall: float  # on the real validation images at `threshold`
    false_alarm_rate: float
    real_images: int
    source: str = "validation photos"  # the images that set temperature and threshold
    selection_recall: float | None = None  # on those images, when they are not validation
    selection_false_alarm_rate: float | None = None


def predict_logits(network: paddle.nn.Layer, grey: np.ndarray, batch_size: int = 64) -> np.ndarray:
    network.eval()
    outputs = []
    with paddle.no_grad():
        for start in range(0, len(grey), batch_size):
            batch = paddle.to_tensor(data.to_batch(grey[start : start + batch_size]))
            outputs.append(network(batch).numpy())
    return np.concatenate(outputs)


def trained_on_line_views(config: TrainConfig) -> bool:
    return config.views == "line" or config.arch in LITE_ARCHITECTURES or bool(config.teacher)


def validation_views(config: TrainConfig, split: data.Split) -> np.ndarray:
    """The validation images as the model is trained to see them: canonical line views
    (`--views line`) or the photos resized."""
    size = config.image_size
    if trained_on_line_views(config):
        from linewatch.pipeline.training.line_views import canonical_view

        cache = data.photo_cache_size(size)
        return np.stack([canonical_view(data.load_image(i, cache), size) for i, _ in split.val])
    return data.load_images(split.val, size)


def defect_mass(logits: np.ndarray, temperature: float, normal: int) -> np.ndarray:
    """1 - P(normal class) of each row of logits at this temperature."""
    scaled = logits / temperature
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return 1 - probs[:, normal] / probs.sum(axis=1)


def choose_operating_point(
    logits: np.ndarray,
    targets: np.ndarray,
    real: np.ndarray,
    labels: tuple[str, ...],
    max_false_alarms: float,
) -> OperatingPoint:
    """Temperature fitted on these images (NLL), then the threshold on 1 - P(free) for
    the false-alarm budget, on the real photos among them only."""
    temperature = fit_temperature(logits, targets) if len(targets) > 1 else 1.0
    if NORMAL_LABEL not in labels or not real.any():
        return OperatingPoint(temperature, 0.5, max_false_alarms, float("nan"), float("nan"), 0)
    normal = labels.index(NORMAL_LABEL)
    mass = defect_mass(logits[real], temperature, normal)
    is_defect = targets[real] != normal
    threshold = threshold_for_false_alarms(mass, is_defect, max_false_alarms)
    report = defect_report(mass, is_defect, threshold)
    return OperatingPoint(
        temperature,
        threshold,
        max_false_alarms,
        report.recall,
        report.false_alarm_rate,
        int(real.sum()),
    )


def operating_point(
    run_dir: Path, split: data.Split, val_logits: np.ndarray, max_false_alarms: float
) -> OperatingPoint:
    """From the run's out-of-fold training scores when it has them (`--folds`), then
    measured on the validation photos; else chosen on the validation photos."""
    targets = np.array([index for _, index in split.val])
    real = np.array([not item.startswith(data.SYNTHETIC_PREFIX) for item, _ in split.val])
    if not (run_dir / OOF_FILE).exists() or NORMAL_LABEL not in split.labels:
        return choose_operating_point(val_logits, targets, real, split.labels, max_false_alarms)
    with np.load(run_dir / OOF_FILE) as stored:
        oof = dict(stored)
    chosen = choose_operating_point(
        oof["logits"],
        oof["targets"],
        np.ones(len(oof["targets"]), bool),
        split.labels,
        max_false_alarms,
    )
    normal = split.labels.index(NORMAL_LABEL)
    source = str(oof.get("source", "out-of-fold training photos"))
    if "view_logits" in oof:
        # the temperature stays the canonical views' fit
        parts, how = part_operating_point(
            defect_mass(oof["view_logits"], chosen.temperature, normal),
            oof["view_photo"],
            oof["targets"],
            normal=normal,
            max_false_alarms=max_false_alarms,
        )
        chosen = replace(
            chosen,
            threshold=parts.threshold,
            recall=parts.recall,
            false_alarm_rate=parts.false_alarm_rate,
        )
        source = f"{source} as {how}"
    mass = defect_mass(val_logits[real], chosen.temperature, normal)
    measured = defect_report(mass, targets[real] != normal, chosen.threshold)
    return replace(
        chosen,
        recall=measured.recall,
        false_alarm_rate=measured.false_alarm_rate,
        real_images=int(real.sum()),
        source=source,
        selection_recall=chosen.recall,
        selection_false_alarm_rate=chosen.false_alarm_rate,
    )


def part_operating_point(
    view_mass: np.ndarray,
    view_photo: np.ndarray,
    photo_targets: np.ndarray,
    *,
    normal: int,
    max_false_alarms: float,
) -> tuple[DefectReport, str]:
    """The threshold for the sink's part verdict rather than for one view: a part is
    seen several times on the belt and judged by its top views, so a per-view threshold
    lets more good parts through to a false reject than its budget says. Held-out line
    views (their defect mass, 1 - P(normal)) of each training photo are dealt into
    simulated parts and the threshold is set on those. Returns the report and how the
    parts were made."""
    part_views = min(PART_VIEWS, int(np.bincount(view_photo).min()))
    scores, photos = part_scores(view_mass, view_photo, part_views, PART_TOP_VIEWS)
    report = recall_at_false_alarms(scores, photo_targets[photos] != normal, max_false_alarms)
    return report, f"line parts ({part_views} views, top-{PART_TOP_VIEWS} mean)"


def load_run(run_dir: Path) -> tuple[TrainConfig, data.Split, paddle.nn.Layer]:
    """The run's config, split and best EMA network (eval mode)."""
    for name in ("config.json", "split.json", "best.pdparams"):
        if not (run_dir / name).exists():
            raise LinewatchError(f"run folder {run_dir} has no {name}; train first")
    config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
    split = data.Split.load(run_dir / "split.json")
    network = build_network(
        config.arch, len(split.labels), config.finetune_from_block, config.cell_features
    )
    network.set_state_dict(paddle.load(str(run_dir / "best.pdparams")))
    network.eval()
    return config, split, network


def inference_config(
    config: TrainConfig, labels: tuple[str, ...], point: OperatingPoint, version: str
) -> dict:
    size = config.image_size
    return {
        "Global": {
            "model_name": f"linewatch-{config.arch}",
            "model_version": version,
            "arch": config.arch,
            "image_size": size,
            **({"cell_features": True} if config.cell_features else {}),
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
            "defect_threshold": round(float(point.threshold), 6),
            **({"crop_margin": DEFAULT_MARGIN} if trained_on_line_views(config) else {}),
            # How the threshold was chosen (documentation; the worker reads the two above).
            "calibration_temperature": round(float(point.temperature), 6),
            "operating_point_from": point.source,
            "max_false_alarms": float(point.max_false_alarms),
            "validation_defect_recall": round(float(point.recall), 6),
            "validation_false_alarm_rate": round(float(point.false_alarm_rate), 6),
            **_selection_figures(point),
        },
    }


def _selection_figures(point: OperatingPoint) -> dict:
    if point.selection_recall is None or point.selection_false_alarm_rate is None:
        return {}
    return {
        "selection_defect_recall": round(float(point.selection_recall), 6),
        "selection_false_alarm_rate": round(float(point.selection_false_alarm_rate), 6),
    }


def export_run(run_dir: Path, out_dir: Path, max_false_alarms: float = MAX_FALSE_ALARMS) -> float:
    """Write `out_dir` (program with both outputs, params, inference.yml with the
    calibrated operating point, gallery.npz and its `Gallery:` section); returns the max
    abs difference between the exported predictor's outputs and the training network's
    on validation images."""
    config, split, network = load_run(run_dir)
    views = validation_views(config, split)
    logits = predict_logits(network, views)
    point = operating_point(run_dir, split, logits, max_false_alarms)
    exported = WithEmbedding(network, point.temperature, load_embedding_head(run_dir))
    export_layer(exported, config.image_size, out_dir / "inference")
    version = time.strftime("%Y.%m.%d-%H%M%S")
    config_yaml = inference_config(config, split.labels, point, version)
    (out_dir / "inference.yml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
    (run_dir / "operating_point.json").write_text(json.dumps(asdict(point), indent=1))
    classifier = Classifier(out_dir, max_batch=32)
    diff = verify_export(exported, classifier, views[:32], logits[:32], point.temperature)
    config_yaml["Gallery"] = gallery_section(
        classifier,
        split,
        data_root=Path(config.data),
        size=config.image_size,
        seed=config.seed,
        out_dir=out_dir,
        held_out=load_held_out(run_dir),
    )
    (out_dir / "inference.yml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
    return diff


def export_from_model(run_dir: Path, out_dir: Path) -> float:
    """Re-export the exported folder a `train-embedding --model` run was made from, with
    the run's embedding head as output 1 and a gallery; the classifier is unchanged (its
    weights, its exact inverse temperature read from the graph, its inference.yml
    settings). Returns the max abs difference of the new folder's probabilities from the
    old folder's on the validation photos' line views."""
    from linewatch.pipeline.training.embedding_train import network_from_model

    source = load_source(run_dir)
    if source is None:
        raise LinewatchError(
            f"{run_dir} is neither a training run nor a train-embedding --model run"
        )
    model_dir, split = Path(source["model"]), data.Split.load(Path(source["split"]))
    network, _, size = network_from_model(model_dir)
    exported = WithEmbedding(network, 1.0, load_embedding_head(run_dir))
    exported.inverse_temperature = exported_inverse_temperature(model_dir)
    export_layer(exported, size, out_dir / "inference")
    config_yaml = yaml.safe_load((model_dir / "inference.yml").read_text())
    config_yaml.pop("Gallery", None)
    glob = config_yaml["Global"]
    # the classifier's version, then when its embedding and gallery were made (a folder
    # re-exported again gets a new embedding: its version changes, its classifier's not)
    classifier_version = str(glob.get("model_version", "unversioned")).split("-gallery")[0]
    glob["model_version"] = f"{classifier_version}-gallery-{time.strftime('%Y.%m.%d-%H%M%S')}"
    (out_dir / "inference.yml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
    classifier = Classifier(out_dir, max_batch=32)
    from linewatch.pipeline.training.evaluate import read_rgb

    views = [read_rgb(item, size, "line") for item, _ in split.val]
    old = Classifier(model_dir, max_batch=32).predict(views)
    diff = float(np.abs(classifier.predict(views) - old).max())
    config_yaml["Gallery"] = gallery_section(
        classifier,
        split,
        data_root=Path(source["data"]),
        size=size,
        seed=0,
        out_dir=out_dir,
        held_out=load_held_out(run_dir),
    )
    (out_dir / "inference.yml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
    return diff


def exported_inverse_temperature(model_dir: Path) -> float:
    """The scale an exported graph applies to the logits before its softmax."""
    paddle.enable_static()
    try:
        program, _, _ = paddle.static.load_inference_model(
            str(model_dir / "inference"), paddle.static.Executor(paddle.CPUPlace())
        )
    finally:
        paddle.disable_static()
    ops = program.global_block().ops
    producer = {name: op for op in ops for name in op.output_arg_names}
    # the classifier's softmax is the last (a cell head's comes before it, unscaled)
    softmaxes = [op for op in ops if op.type == "softmax"]
    scales = [producer.get(op.input_arg_names[0]) for op in reversed(softmaxes)]
    scale = next((op for op in scales if op is not None and op.type == "scale"), None)
    if scale is None:
        raise LinewatchError(f"{model_dir}: no temperature scale before the softmax")
    return float(scale.attr("scale"))


def verify_export(
    exported: WithEmbedding,
    classifier: Classifier,
    views: np.ndarray,
    logits: np.ndarray,
    temperature: float,
) -> float:
    """Max abs difference of the reloaded predictor's two outputs from the network's:
    probabilities from the training logits and the temperature, embeddings from the
    exported layer run in dygraph."""
    rgb = [np.repeat(image[..., None], 3, axis=2) for image in views]
    predicted, embeddings = classifier.predict_with_embeddings(rgb)
    if embeddings is None:
        raise LinewatchError("the exported graph lost its embedding output (output 1)")
    scaled = logits / temperature
    expected = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    exported.eval()
    with paddle.no_grad():
        _, reference = exported(paddle.to_tensor(data.to_batch(views)))
    return float(
        max(np.abs(predicted - expected).max(), np.abs(embeddings - reference.numpy()).max())
    )
