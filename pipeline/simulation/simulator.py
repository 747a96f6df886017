"""A simulated conveyor line: parts pass a camera one after another.

Each part (a tile image from an ImageFolder, or from the synthetic generator)
stays in view for several frames with positional jitter; the whole line drifts
in brightness and gets sensor noise and occasional motion blur. A ground-truth
CSV maps every frame to its part and class.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from linewatch.pipeline.simulation.synthetic import DEFECT_LABELS, NORMAL_LABEL, make_tile
from linewatch.pipeline.video.video_writer import write_video

TRUTH_COLUMNS = ("frame", "pts", "part_id", "label")


@dataclass(frozen=True)
class LineSpec:
    parts: int = 40
    frames_per_part: int = 8
    fps: float = 10.0
    defect_rate: float = 0.2
    frame_size: int = 256
    tile_size: int = 224
    jitter_px: int = 8
    seed: int = 0


@dataclass(frozen=True)
class TruthRow:
    frame: int
    pts: float
    part_id: int
    label: str


class TileSource:
    """Tiles by class: photos from an ImageFolder when given, else synthetic ones."""

    def __init__(self, image_folder: Path | None, size: int) -> None:
        self.size = size
        self.files: dict[str, list[Path]] = {}
        if image_folder is not None:
            for folder in sorted(p for p in image_folder.iterdir() if p.is_dir()):
                self.files[folder.name] = sorted(folder.glob("*.[jp][pn]g"))

    @property
    def defect_labels(self) -> list[str]:
        if self.files:
            return [label for label in self.files if label != NORMAL_LABEL and self.files[label]]
        return list(DEFECT_LABELS)

    def tile(self, label: str, rng: np.random.Generator) -> np.ndarray:
        if not self.files:
            return make_tile(rng, label, self.size)
        path = self.files[label][int(rng.integers(len(self.files[label])))]
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        return cv2.resize(grey, (self.size, self.size), interpolation=cv2.INTER_AREA)


def part_labels(spec: LineSpec, defects: list[str], rng: np.random.Generator) -> list[str]:
    return [
        str(rng.choice(defects)) if rng.random() < spec.defect_rate else NORMAL_LABEL
        for _ in range(spec.parts)
    ]


def render_line(spec: LineSpec, source: TileSource, truth: list[TruthRow]) -> Iterator[np.ndarray]:
    """Frames of the line; appends each frame's ground truth to `truth` as it goes."""
    rng = np.random.default_rng(spec.seed)
    labels = part_labels(spec, source.defect_labels, rng)
    belt = np.full((spec.frame_size, spec.frame_size), 40, np.float32)
    margin = (spec.frame_size - spec.tile_size) // 2
    for part_id, label in enumerate(labels):
        tile = source.tile(label, rng).astype(np.float32)
        for step in range(spec.frames_per_part):
            index = part_id * spec.frames_per_part + step
            frame = belt.copy()
            dy, dx = (int(v) for v in rng.integers(-spec.jitter_px, spec.jitter_px + 1, 2))
            top, left = margin + dy, margin + dx
            frame[top : top + spec.tile_size, left : left + spec.tile_size] = tile
            truth.append(TruthRow(index, index / spec.fps, part_id, label))
            yield _camera_effects(frame, index, rng)


def _camera_effects(frame: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
    drift = 1.0 + 0.08 * np.sin(index / 50.0)
    frame = frame * drift + rng.normal(0, 3.0, frame.shape)
    if rng.random() < 0.1:
        frame = cv2.blur(frame, (5, 1))
    grey = np.clip(frame, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def simulate(
    out_dir: Path, spec: LineSpec, cameras: int = 1, image_folder: Path | None = None
) -> list[tuple[Path, Path]]:
    """Write `cameras` videos and their truth CSVs; returns (video, truth) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = TileSource(image_folder, spec.tile_size)
    outputs = []
    for camera in range(cameras):
        camera_spec = LineSpec(**{**spec.__dict__, "seed": spec.seed + camera})
        truth: list[TruthRow] = []
        video = write_video(
            out_dir / f"cam{camera + 1}.mp4", render_line(camera_spec, source, truth), spec.fps
        )
        outputs.append((video, write_truth(out_dir / f"cam{camera + 1}.csv", truth)))
    return outputs


def write_truth(path: Path, rows: list[TruthRow]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows((r.frame, f"{r.pts:.6f}", r.part_id, r.label) for r in rows)
    return path


def read_truth(path: Path) -> list[TruthRow]:
    with path.open(newline="") as source:
        reader = csv.DictReader(source)
        if reader.fieldnames is None or set(TRUTH_COLUMNS) - set(reader.fieldnames):
            raise ValueError(f"{path} is not a truth CSV with columns {TRUTH_COLUMNS}")
        return [
            TruthRow(int(r["frame"]), float(r["pts"]), int(r["part_id"]), r["label"])
            for r in reader
        ]
