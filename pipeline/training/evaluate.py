"""`linewatch model eval`: an exported model against an ImageFolder, as the worker runs it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.gallery.store import load_gallery
from linewatch.pipeline.inference.classifier import Classifier, ModelInfo
from linewatch.pipeline.inference.uploads import upload_probs
from linewatch.pipeline.training import data
from linewatch.pipeline.training.gallery_metrics import gallery_figures
from linewatch.pipeline.training.metrics import (
    ClassReport,
    class_report,
    defect_report,
    operating_curve,
    recall_at_false_alarms,
)
from linewatch.pipeline.video.belt_view import canonical_rgb


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
        return canonical_rgb(data.load_image(item, data.photo_cache_size(size)), size)
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
    """Probabilities of the items as `views`; `photo` views are judged as /v1/classify
    judges an upload (pipeline/inference/uploads.py)."""
    size = classifier.preprocessor.output_size[0]
    judge = partial(upload_probs, classifier) if views == "photo" else classifier.predict
    probs = []
    for start in track(range(0, len(items), batch_size), description="evaluating"):
        chunk = items[start : start + batch_size]
        probs.append(judge([read_rgb(item, size, views) for item, _ in chunk]))
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


VIEWS = ("line", "photo")  # what `linewatch model eval` scores by default, one table each


def evaluate(
    model_dir: Path,
    data_dir: Path,
    split_file: Path | None,
    threads: int,
    include_synthetic: bool = False,
    views: tuple[str, ...] = VIEWS,
    max_false_alarms: float = 0.01,
    curve: Path | None = None,
) -> dict[str, dict]:
    """The model on the images, once per kind of view: {view: figures}. `line`: each
    photo as the line's crop of it; `photo`: the photo as a person uploads it."""
    classifier = Classifier(model_dir, threads=threads, device="cpu", max_batch=32)
    folder_labels, items = eval_items(data_dir, split_file, include_synthetic)
    info = classifier.info
    unknown = [label for label in folder_labels if label not in info.labels]
    if unknown:
        raise LinewatchError(
            f"classes {unknown} of {data_dir} are not in the model's labels {list(info.labels)}"
        )
    y_true = np.array([info.labels.index(folder_labels[index]) for _, index in items])
    latency = measure_latency(classifier)
    results = {}
    for view in views:
        probs = predict_items(classifier, items, views=view)
        view_curve = curve if curve is None or len(views) == 1 else _per_view(curve, view)
        title = f"{model_dir} ({view} views)"
        results[view] = score_view(probs, y_true, info, max_false_alarms, view_curve, title)
        results[view].update(
            _as_json(model_dir, data_dir, split_file, latency, info.version), views=view
        )
    if info.gallery is not None:
        truth = [info.labels[int(label)] for label in y_true]
        results["gallery"] = gallery_eval(classifier, model_dir, items, truth)
    return results


def gallery_eval(classifier: Classifier, model_dir: Path, items: list, truth: list[str]) -> dict:
    """The model's exported gallery searched with the images as line views (their
    embeddings from the same predictor call as the probabilities): 1-NN macro-F1,
    leave-one-class-out novelty AUROC per defect class, few-shot recall at 5 and 10."""
    info = classifier.info
    assert info.gallery is not None
    size = classifier.preprocessor.output_size[0]
    embeddings = []
    for start in range(0, len(items), 32):
        chunk = [read_rgb(item, size, "line") for item, _ in items[start : start + 32]]
        embeddings.append(classifier.predict_with_embeddings(chunk)[1])
    gallery = load_gallery(model_dir / info.gallery.file)
    defects = [label for label in info.labels if label not in info.normal_labels]
    return gallery_figures(gallery, np.concatenate(embeddings), truth, defects)


def _per_view(path: Path, view: str) -> Path:
    return path.with_name(f"{path.stem}_{view}{path.suffix}")


def score_view(
    probs: np.ndarray,
    y_true: np.ndarray,
    info: ModelInfo,
    max_false_alarms: float,
    curve: Path | None = None,
    title: str = "",
) -> dict:
    """Class table, defect recall and false alarms at the model's threshold, and the best
    recall within the false-alarm budget, of one kind of view."""
    report = class_report(y_true, probs.argmax(axis=1), info.labels)
    normal = [info.labels.index(label) for label in info.normal_labels]
    defect_mass = 1 - probs[:, normal].sum(axis=1)
    is_defect = ~np.isin(y_true, normal)
    binary = defect_report(defect_mass, is_defect, info.defect_threshold)
    budget = recall_at_false_alarms(defect_mass, is_defect, max_false_alarms)
    if curve is not None:
        plot_curve(defect_mass, is_defect, binary, max_false_alarms, curve, title)
    return {
        **_class_json(report),
        "defect_threshold": binary.threshold,
        "defect_recall": binary.recall,
        "false_alarm_rate": binary.false_alarm_rate,
        "budget": {
            "max_false_alarms": max_false_alarms,
            "best_recall": budget.recall,
            "false_alarm_rate": budget.false_alarm_rate,
            "threshold": budget.threshold,
        },
        "defects": int(is_defect.sum()),
        "normals": int((~is_defect).sum()),
    }


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


def _class_json(report: ClassReport) -> dict:
    return {
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
    }


def _as_json(
    model_dir: Path, data_dir: Path, split_file: Path | None, latency: Latency, version: str
) -> dict:
    return {
        "model": str(model_dir),
        "model_version": version,
        "data": str(data_dir),
        "split": str(split_file) if split_file else "all images",
        "latency_batch1_ms": latency.batch1_ms,
        "throughput_batch32_images_per_s": latency.batch32_images_per_s,
    }


def print_report(results: dict[str, dict], console: Console | None = None) -> None:
    """One class table, confusion matrix and summary per kind of view."""
    console = console or Console()
    for view, result in results.items():
        if view != "gallery":
            print_view(result, console)
    if "gallery" in results:
        print_gallery(results["gallery"], console)


def print_gallery(result: dict, console: Console) -> None:
    table = Table(title=f"gallery ({result['entries']} entries), {result['queries']} line views")
    for column in ("class", "novelty AUROC (class left out)", "recall, 5 shots", "10 shots"):
        table.add_column(column, justify="left" if column == "class" else "right")
    few = result["few_shot_recall"]
    for label, value in result["novelty_auroc"].items():
        shots = [few[n].get(label, float("nan")) for n in ("5", "10")]
        table.add_row(label, f"{value:.3f}", *(f"{v:.3f}" for v in shots))
    console.print(table)
    console.print(
        f"1-NN macro-F1 {result['nn_macro_f1']:.3f}  |  mean novelty AUROC "
        f"{result['mean_novelty_auroc']:.3f}\n"
    )


def print_view(result: dict, console: Console) -> None:
    table = Table(
        title=f"{result['views']} views: {result['model']} on {result['data']} ({result['split']})"
    )
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
    budget = result["budget"]
    console.print(
        f"{result['defects']} defects / {result['normals']} good ({result['views']} views): "
        f"best recall within {budget['max_false_alarms']:.1%} false alarms "
        f"{budget['best_recall']:.3f} (false alarms {budget['false_alarm_rate']:.1%} at "
        f"threshold {budget['threshold']:.3f})\n"
    )
