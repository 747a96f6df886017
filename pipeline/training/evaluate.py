"""`linewatch eval`: an exported model against an ImageFolder, as the worker runs it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training import data
from linewatch.pipeline.training.metrics import (
    ClassReport,
    class_report,
    defect_report,
    operating_curve,
    recall_at_false_alarms,
)


@dataclass(frozen=True)
class Latency:
    batch1_ms: float
    batch32_images_per_s: float


def eval_items(
    data_dir: Path, split_file: Path | None, include_synthetic: bool = False
) -> tuple[tuple[str, ...], list]:
    """(folder labels, items): every image in the folder, or the split's validation images
    that lie in `data_dir` (plus its generated tiles with `include_synthetic`)."""
    if split_file is None:
        return data.scan_image_folder(data_dir)
    if not split_file.is_file():
        raise LinewatchError(f"split file {split_file} not found (a run's split.json)")
    split = data.Split.load(split_file)
    root = data_dir.resolve()
    items = [
        (item, index)
        for item, index in split.val
        if (include_synthetic and item.startswith(data.SYNTHETIC_PREFIX))
        or Path(item).resolve().is_relative_to(root)
    ]
    if not items:
        raise LinewatchError(f"no validation images of {split_file} lie in {data_dir}")
    return split.labels, items


def read_rgb(item: str, size: int, views: str = "photo") -> np.ndarray:
    if views == "line":
        from linewatch.pipeline.training.line_views import canonical_view

        grey = data.load_image(item, int(round(size * 256 / 224)))
        return np.repeat(canonical_view(grey, size)[..., None], 3, axis=2)
    if item.startswith(data.SYNTHETIC_PREFIX):
        grey = data.load_image(item, size)
        return np.repeat(grey[..., None], 3, axis=2)
    image = cv2.imread(item, cv2.IMREAD_COLOR)
    if image is None:
        raise LinewatchError(f"cannot read image {item}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def predict_items(
    classifier: Classifier, items: list, batch_size: int = 32, views: str = "photo"
) -> np.ndarray:
    size = classifier.preprocessor.output_size[0]
    probs = []
    for start in track(range(0, len(items), batch_size), description="evaluating"):
        chunk = items[start : start + batch_size]
        probs.append(classifier.predict([read_rgb(item, size, views) for item, _ in chunk]))
    return np.concatenate(probs)


def measure_latency(classifier: Classifier, repeats: int = 30) -> Latency:
    width, height = classifier.preprocessor.output_size
    single = np.zeros((1, 3, height, width), np.float32)
    batch = np.zeros((32, 3, height, width), np.float32)
    classifier.infer(single), classifier.infer(batch)
    times1 = [_timed(lambda: classifier.infer(single)) for _ in range(repeats)]
    times32 = [_timed(lambda: classifier.infer(batch)) for _ in range(max(5, repeats // 3))]
    return Latency(float(np.median(times1) * 1000), float(32 / np.median(times32)))


def _timed(call) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def evaluate(
    model_dir: Path,
    data_dir: Path,
    split_file: Path | None,
    threads: int,
    include_synthetic: bool = False,
    views: str = "photo",
    max_false_alarms: float = 0.01,
    curve: Path | None = None,
) -> dict:
    classifier = Classifier(model_dir, threads=threads, device="cpu", max_batch=32)
    folder_labels, items = eval_items(data_dir, split_file, include_synthetic)
    info = classifier.info
    unknown = [label for label in folder_labels if label not in info.labels]
    if unknown:
        raise LinewatchError(
            f"classes {unknown} of {data_dir} are not in the model's labels {list(info.labels)}"
        )
    y_true = np.array([info.labels.index(folder_labels[index]) for _, index in items])
    probs = predict_items(classifier, items, views=views)
    report = class_report(y_true, probs.argmax(axis=1), info.labels)
    normal = [info.labels.index(label) for label in info.normal_labels]
    defect_mass = 1 - probs[:, normal].sum(axis=1)
    is_defect = ~np.isin(y_true, normal)
    binary = defect_report(defect_mass, is_defect, info.defect_threshold)
    budget = recall_at_false_alarms(defect_mass, is_defect, max_false_alarms)
    if curve is not None:
        plot_curve(defect_mass, is_defect, binary, max_false_alarms, curve, str(model_dir))
    latency = measure_latency(classifier)
    result = _as_json(model_dir, data_dir, split_file, report, binary, latency, info.version)
    result["views"] = views
    result["budget"] = {
        "max_false_alarms": max_false_alarms,
        "best_recall": budget.recall,
        "false_alarm_rate": budget.false_alarm_rate,
        "threshold": budget.threshold,
    }
    result["defects"] = int(is_defect.sum())
    result["normals"] = int((~is_defect).sum())
    return result


def plot_curve(
    defect_mass: np.ndarray,
    is_defect: np.ndarray,
    shipped,  # type: ignore[no-untyped-def]  (DefectReport at the model's threshold)
    max_false_alarms: float,
    path: Path,
    title: str,
) -> None:
    """Defect recall against the false-alarm rate over all thresholds, with the budget
    and the model's own operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = operating_curve(defect_mass, is_defect)
    figure, axis = plt.subplots(figsize=(5.5, 4))
    axis.step(
        np.r_[0, points[:, 0] * 100], np.r_[0, points[:, 1]], where="post", label="all thresholds"
    )
    axis.axvline(max_false_alarms * 100, color="grey", linestyle="--", label="budget")
    axis.plot(
        [shipped.false_alarm_rate * 100],
        [shipped.recall],
        "o",
        color="crimson",
        label=f"shipped threshold {shipped.threshold:.3f}",
    )
    axis.set_xscale("symlog", linthresh=1.0)
    axis.set_xlim(0, 100)
    axis.set_ylim(max(0.0, float(points[:, 1].min()) - 0.05) if len(points) else 0, 1.005)
    axis.set_xlabel("false alarms (% of good tiles flagged)")
    axis.set_ylabel("defect recall")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _as_json(
    model_dir, data_dir, split_file, report: ClassReport, binary, latency, version
) -> dict:  # type: ignore[no-untyped-def]
    return {
        "model": str(model_dir),
        "model_version": version,
        "data": str(data_dir),
        "split": str(split_file) if split_file else "all images",
        "images": int(report.support.sum()),
        "per_class": {
            label: {
                "precision": float(report.precision[i]),
                "recall": float(report.recall[i]),
                "f1": float(report.f1[i]),
                "support": int(report.support[i]),
            }
            for i, label in enumerate(report.labels)
        },
        "labels": list(report.labels),
        "confusion": report.confusion.tolist(),
        "macro_f1": report.macro_f1,
        "accuracy": report.accuracy,
        "defect_threshold": binary.threshold,
        "defect_recall": binary.recall,
        "false_alarm_rate": binary.false_alarm_rate,
        "latency_batch1_ms": latency.batch1_ms,
        "throughput_batch32_images_per_s": latency.batch32_images_per_s,
    }


def print_report(result: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{result['model']} on {result['data']} ({result['split']})")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, row in result["per_class"].items():
        table.add_row(
            label,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    console.print(table)
    confusion = Table(title="confusion (rows: true, columns: predicted)")
    confusion.add_column("")
    for label in result["labels"]:
        confusion.add_column(label[:8], justify="right")
    for label, row in zip(result["labels"], result["confusion"], strict=True):
        confusion.add_row(label, *(str(v) for v in row))
    console.print(confusion)
    console.print(
        f"macro-F1 {result['macro_f1']:.3f}  accuracy {result['accuracy']:.3f}  |  "
        f"defect recall {result['defect_recall']:.3f}, false alarms "
        f"{result['false_alarm_rate']:.1%} at threshold {result['defect_threshold']:.3f}  |  "
        f"predictor: batch 1 {result['latency_batch1_ms']:.1f} ms, batch 32 "
        f"{result['throughput_batch32_images_per_s']:.0f} img/s"
    )
    if "budget" in result:
        budget = result["budget"]
        console.print(
            f"{result['defects']} defects / {result['normals']} good ({result['views']} views): "
            f"best recall within {budget['max_false_alarms']:.1%} false alarms "
            f"{budget['best_recall']:.3f} (false alarms {budget['false_alarm_rate']:.1%} at "
            f"threshold {budget['threshold']:.3f})"
        )
