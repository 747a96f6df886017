"""How much of the shipped recipe's validation error is the head's seed: the frozen
trunk's pooled taps of the shipped recipe's training views (cached in RUN once), heads
trained with different seeds, each and their mean scored on the validation photos.

    python bench/head_seeds.py runs/head-seeds [--seeds 5]

The views are the shipped command's (`--views line --views-per-image 80 --photo-share
0.25 --image-size 160 --seed 0`), the heads its `train_head` (40 epochs, batch 64,
lr 1e-3). Validation: the canonical line view of each photo, and the photo judged as
`/v1/classify` judges an upload (the photo and its line view, averaged). Probabilities
use the shipped temperature; the threshold is the shipped one.
"""

from __future__ import annotations

import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from linewatch.pipeline.inference.classifier import Classifier  # noqa: E402
from linewatch.pipeline.inference.uploads import line_view  # noqa: E402
from linewatch.pipeline.training import data  # noqa: E402
from linewatch.pipeline.training.efficientnet import PooledFeatures, TeacherHead  # noqa: E402
from linewatch.pipeline.training.metrics import (  # noqa: E402
    class_report,
    defect_report,
    recall_at_false_alarms,
)
from linewatch.pipeline.training.nets import build_network  # noqa: E402
from linewatch.pipeline.training.static_runner import StaticRunner  # noqa: E402
from linewatch.pipeline.training.teacher import (  # noqa: E402
    canonical_views,
    extract,
    head_logits,
    make_pool,
    train_head,
)
from linewatch.pipeline.training.train import TrainConfig  # noqa: E402

MODEL = Path("models/linewatch-tile")
SIZE = 160


def cached_features(run: Path, split: data.Split, model: Classifier) -> dict[str, np.ndarray]:
    """Training views' taps and targets; validation taps as line views, photos and the
    photos' line views (`RUN/features.npz`, made once)."""
    path = run / "features.npz"
    if path.exists():
        with np.load(path) as stored:
            return dict(stored)
    photos = data.load_images(split.train, data.photo_cache_size(SIZE))
    targets = np.array([index for _, index in split.train])
    views, view_targets, _ = make_pool(photos, targets, SIZE, 80, 0, 0.25, "default")
    network = build_network("EfficientNetLite0_s5", len(split.labels))
    network.backbone.load_torch_weights()
    runner = StaticRunner.of(PooledFeatures(network.backbone), SIZE, run / "trunk" / "taps")
    val_photos = data.load_images(split.val, data.photo_cache_size(SIZE))
    rgb = [cv2.cvtColor(cv2.imread(item), cv2.COLOR_BGR2RGB) for item, _ in split.val]
    features = {
        "line": extract(runner, canonical_views(val_photos, SIZE), run, "validation"),
        "photo": runner(model.preprocessor.batch(rgb)),
        "photo_line": runner(model.preprocessor.batch([line_view(im, SIZE) for im in rgb])),
        "val_targets": np.array([index for _, index in split.val]),
        "train": extract(runner, views, run, "training views"),
        "train_targets": view_targets,
    }
    np.savez(path, **features)
    return features


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = logits / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    return np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True)


def figures(probs: np.ndarray, truth: np.ndarray, model: Classifier) -> str:
    info = model.info
    normal = info.labels.index(info.normal_labels[0])
    defect_mass, is_defect = 1 - probs[:, normal], truth != normal
    shipped = defect_report(defect_mass, is_defect, info.defect_threshold)
    best = recall_at_false_alarms(defect_mass, is_defect, 0.01)
    macro = class_report(truth, probs.argmax(axis=1), info.labels).macro_f1
    return (
        f"{macro:.3f} | {shipped.recall:.3f} ({shipped.false_alarm_rate:.3f}) | {best.recall:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    split = data.Split.load(MODEL / "split.json")
    model = Classifier(MODEL, threads=2, device="cpu", max_batch=32)
    features = cached_features(args.run_dir, split, model)
    shipped = yaml.safe_load((MODEL / "inference.yml").read_text())["Linewatch"]
    temperature = float(shipped["calibration_temperature"])
    truth, rows, line_probs, photo_probs = features["val_targets"], [], [], []
    for seed in range(args.seeds):
        start = time.time()
        config = TrainConfig(
            data="", run_dir=str(args.run_dir), epochs=40, batch_size=64, lr=1e-3, seed=seed
        )
        head = TeacherHead(len(split.labels), features["train"].shape[1])
        train_head(head, features["train"], features["train_targets"], config, split.labels)
        probs = {
            view: softmax(head_logits(head, features[view]), temperature)
            for view in ("line", "photo", "photo_line")
        }
        line_probs.append(probs["line"])
        photo_probs.append((probs["photo"] + probs["photo_line"]) / 2)
        rows.append((f"seed {seed}", line_probs[-1], photo_probs[-1]))
        print(f"seed {seed}: {time.time() - start:.0f} s", flush=True)
    rows.append((f"mean of {args.seeds}", np.mean(line_probs, 0), np.mean(photo_probs, 0)))
    print(
        "| head | line macro-F1 | line recall (FA) at the shipped threshold "
        "| line best ≤ 1 % FA | upload macro-F1 | upload recall (FA) | upload best ≤ 1 % FA |"
    )
    print("|---" * 7 + "|")
    for name, line, photo in rows:
        print(f"| {name} | {figures(line, truth, model)} | {figures(photo, truth, model)} |")


if __name__ == "__main__":
    main()
