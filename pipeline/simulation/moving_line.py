"""A moving conveyor line: parts ride a belt past the camera, left to right.

Parts (photos from an ImageFolder or a training run's split, else synthetic tiles)
enter on the left and leave on the right at a constant belt speed; the gaps between
them vary so that 0, 1 or 2 parts are in view; their sizes vary a little. The belt has a
texture that moves with it; the camera adds brightness drift, sensor noise and
occasional motion blur. Two truth CSVs go with each video: one row per part (label,
frames in view, frames wholly in view) and one row per part box per frame.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.simulation.synthetic import DEFECT_LABELS, NORMAL_LABEL, make_tile
from linewatch.pipeline.video.crop import PixelBox
from linewatch.pipeline.video.video_writer import write_video

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
PART_COLUMNS = (
    "camera",
    "part_index",
    "label",
    "is_defect",
    "first_frame",
    "last_frame",
    "first_whole_frame",
    "last_whole_frame",
    "first_pts",
    "last_pts",
    "source",
)
FRAME_COLUMNS = ("camera", "frame", "pts", "part_index", "x1", "y1", "x2", "y2", "whole")
BELT_LEVEL = 40.0
EDGE_ROOM = 12  # px between a part and the top and bottom of the frame


@dataclass(frozen=True)
class MovingLineSpec:
    parts: int = 40
    fps: float = 10.0
    frames_to_cross: int = 16  # frames a part's left edge takes to cross the view
    defect_rate: float = 0.2
    width: int = 640
    height: int = 480
    part_size: int = 200  # part height in px; the width follows the photo's aspect
    size_jitter: float = 0.08
    min_gap: int = 96  # px between parts: more than a `parts.merge_gap` of 64
    noise: float = 3.0
    seed: int = 0
    belt_level: float = BELT_LEVEL  # the belt's mean grey
    belt_grain: float = 6.0  # std of the belt's texture before its blur
    aspect: tuple[float, float] = (0.6, 1.6)  # photos' width / height is clamped to this
    tone: tuple[float, float] = (1.0, 1.0)  # each part's grey is scaled by a draw from this

    def __post_init__(self) -> None:
        problems = []
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 64:
            problems.append(f"frame {self.width}x{self.height} must be even and at least 64")
        if not 16 <= self.part_size <= self.height - 2 * EDGE_ROOM:
            problems.append(f"part size {self.part_size} must lie in 16..height - {2 * EDGE_ROOM}")
        if self.parts < 1 or self.frames_to_cross < 1 or self.fps <= 0:
            problems.append("parts, frames to cross and fps must be positive")
        if not 0 <= self.defect_rate <= 1:
            problems.append(f"defect rate {self.defect_rate} must lie in 0..1")
        if not 0 < self.aspect[0] <= self.aspect[1] or not 0 < self.tone[0] <= self.tone[1]:
            problems.append("aspect and tone must be ranges (low <= high) of positive numbers")
        if problems:
            raise LinewatchError("moving line: " + "; ".join(problems))

    @property
    def speed(self) -> float:
        """Belt speed in px per frame."""
        return self.width / self.frames_to_cross


@dataclass(frozen=True)
class PlacedPart:
    """A part on the belt: its image and its left edge at frame 0 (negative: upstream)."""

    index: int
    label: str
    image: np.ndarray  # grey uint8 h x w
    x0: float
    y: int
    source: str = "synthetic"

    def box(self, frame: int, speed: float) -> PixelBox:
        """Where the part is at `frame`, unclipped (it may lie partly or wholly outside)."""
        left = round(self.x0 + speed * frame)
        height, width = self.image.shape
        return PixelBox(left, self.y, left + width, self.y + height)


def visible_box(box: PixelBox, width: int, height: int) -> PixelBox | None:
    """The part of `box` inside the frame; None when nothing of it is."""
    clipped = PixelBox(max(0, box.x1), max(0, box.y1), min(width, box.x2), min(height, box.y2))
    return clipped if clipped.width > 0 and clipped.height > 0 else None


def is_whole(box: PixelBox, width: int, height: int) -> bool:
    return box.x1 >= 0 and box.y1 >= 0 and box.x2 <= width and box.y2 <= height


class TileImages:
    """Part images by class: photos (aspect kept), or synthetic tiles when none given.
    Photos are drawn without replacement within a class, reshuffled when all were used."""

    def __init__(
        self, items: Sequence[tuple[str, str]] = (), aspect: tuple[float, float] = (0.6, 1.6)
    ) -> None:
        self.aspect = aspect
        self.files: dict[str, list[str]] = {}
        for path, label in items:
            self.files.setdefault(label, []).append(path)
        self._queues: dict[str, list[str]] = {}

    @property
    def defect_labels(self) -> list[str]:
        if self.files:
            return sorted(label for label in self.files if label != NORMAL_LABEL)
        return list(DEFECT_LABELS)

    @property
    def has_normal(self) -> bool:
        return not self.files or NORMAL_LABEL in self.files

    def tile(self, label: str, height: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if not self.files:
            return make_tile(rng, label, height), "synthetic"
        queue = self._queues.get(label)
        if not queue:
            queue = self._queues[label] = list(rng.permutation(self.files[label]))
        path = queue.pop()
        grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise LinewatchError(f"cannot read image {path}; remove it or replace it")
        aspect = min(self.aspect[1], max(self.aspect[0], grey.shape[1] / grey.shape[0]))
        size = (round(height * aspect), height)
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA), path


def folder_items(root: Path) -> list[tuple[str, str]]:
    """(path, label) of every image of an ImageFolder (one sub-folder per class)."""
    if not root.is_dir():
        raise LinewatchError(f"image folder {root} not found; pass an ImageFolder root")
    items = [
        (str(path), folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise LinewatchError(f"{root} holds no images in class sub-folders")
    return items


def place_parts(
    spec: MovingLineSpec, images: TileImages, rng: np.random.Generator
) -> list[PlacedPart]:
    """Parts queued upstream of the view, left edges spaced by varying gaps."""
    parts: list[PlacedPart] = []
    right_edge = 0.0  # of the previous part, in belt coordinates at frame 0
    for index in range(spec.parts):
        label = _label(spec, images, rng)
        height = round(spec.part_size * (1 + rng.uniform(-spec.size_jitter, spec.size_jitter)))
        height = min(height, spec.height - 2 * EDGE_ROOM)
        image, source = images.tile(label, height, rng)
        if spec.tone != (1.0, 1.0):
            image = np.clip(image * rng.uniform(*spec.tone), 0, 255).astype(np.uint8)
        if image.shape[1] > spec.width - 2 * EDGE_ROOM:
            image = image[:, : spec.width - 2 * EDGE_ROOM]
        gap = _gap(spec, rng) if parts else spec.min_gap
        x0 = right_edge - gap - image.shape[1]
        y = int(rng.integers(EDGE_ROOM, spec.height - height - EDGE_ROOM + 1))
        parts.append(PlacedPart(index, label, image, x0, y, source))
        right_edge = x0
    return parts


def _label(spec: MovingLineSpec, images: TileImages, rng: np.random.Generator) -> str:
    if rng.random() < spec.defect_rate or not images.has_normal:
        return str(rng.choice(images.defect_labels))
    return NORMAL_LABEL


def _gap(spec: MovingLineSpec, rng: np.random.Generator) -> float:
    """Short gaps (two parts in view), medium ones (one) and long ones (an empty belt)."""
    short = max(spec.min_gap + 1.0, 0.4 * spec.width)
    draw = rng.random()
    if draw < 0.35:
        return rng.uniform(spec.min_gap, short)
    if draw < 0.75:
        return rng.uniform(short, max(short + 1.0, spec.width))
    return rng.uniform(spec.width, 1.6 * spec.width)


def frame_count(spec: MovingLineSpec, parts: Sequence[PlacedPart]) -> int:
    """Frames until the last part has left the view."""
    upstream = -min(part.x0 for part in parts)
    return math.ceil((upstream + spec.width) / spec.speed) + 1


class Belt:
    """A textured belt that moves with the parts, and the camera's effects."""

    def __init__(self, spec: MovingLineSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        period = 2 * spec.width
        grain = rng.normal(0, spec.belt_grain, (spec.height, period)).astype(np.float32)
        self.texture = spec.belt_level + cv2.GaussianBlur(grain, (0, 0), 1.5)
        self.columns = np.arange(spec.width)

    def frame(self, parts: Sequence[PlacedPart], index: int) -> np.ndarray:
        spec = self.spec
        shift = round(spec.speed * index)
        canvas = self.texture[:, (self.columns - shift) % self.texture.shape[1]]
        for part in parts:
            _paste(canvas, part, part.box(index, spec.speed))
        return self._camera(canvas, index)

    def _camera(self, canvas: np.ndarray, index: int) -> np.ndarray:
        drift = 1.0 + 0.1 * math.sin(index / 40.0)
        noise = self.rng.standard_normal(canvas.shape, dtype=np.float32)
        out = canvas * drift + noise * np.float32(self.spec.noise)
        if self.rng.random() < 0.1:
            out = cv2.blur(out, (5, 1))
        grey = np.clip(out, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)


def _paste(canvas: np.ndarray, part: PlacedPart, box: PixelBox) -> None:
    height, width = canvas.shape
    seen = visible_box(box, width, height)
    if seen is None:
        return
    patch = part.image[seen.y1 - box.y1 : seen.y2 - box.y1, seen.x1 - box.x1 : seen.x2 - box.x1]
    canvas[seen.y1 : seen.y2, seen.x1 : seen.x2] = patch


@dataclass
class PartTruth:
    part: PlacedPart
    frames: list[int]
    whole_frames: list[int]


def render(
    spec: MovingLineSpec, parts: Sequence[PlacedPart], frame_rows: list[tuple]
) -> Iterator[np.ndarray]:
    """Frames of the line; appends (frame, part index, box, whole) rows as it goes."""
    belt = Belt(spec, np.random.default_rng([spec.seed, 1]))
    for index in range(frame_count(spec, parts)):
        for part in parts:
            box = part.box(index, spec.speed)
            seen = visible_box(box, spec.width, spec.height)
            if seen is not None:
                frame_rows.append((index, part.index, seen, is_whole(box, spec.width, spec.height)))
        yield belt.frame(parts, index)


def part_truths(parts: Sequence[PlacedPart], frame_rows: Sequence[tuple]) -> list[PartTruth]:
    truths = {part.index: PartTruth(part, [], []) for part in parts}
    for frame, part_index, _box, whole in frame_rows:
        truths[part_index].frames.append(frame)
        if whole:
            truths[part_index].whole_frames.append(frame)
    return [truths[part.index] for part in parts]


def simulate_moving(
    out_dir: Path,
    spec: MovingLineSpec,
    cameras: int = 1,
    items: Sequence[tuple[str, str]] = (),
) -> list[tuple[Path, Path, Path]]:
    """Write `cameras` moving-line videos with their part and frame truth CSVs; returns
    (video, parts CSV, frames CSV) triples. `items`: (path, label) photos (else synthetic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = TileImages(items, spec.aspect)
    outputs = []
    for number in range(1, cameras + 1):
        camera_spec = replace(spec, seed=spec.seed + number - 1)
        parts = place_parts(camera_spec, images, np.random.default_rng(camera_spec.seed))
        frame_rows: list[tuple] = []
        name = f"cam{number}"
        frames = render(camera_spec, parts, frame_rows)
        video = write_video(out_dir / f"{name}.mp4", frames, spec.fps)
        truths = part_truths(parts, frame_rows)
        parts_csv = write_part_truth(out_dir / f"{name}.parts.csv", name, truths, spec.fps)
        frames_csv = write_frame_truth(out_dir / f"{name}.frames.csv", name, frame_rows, spec.fps)
        outputs.append((video, parts_csv, frames_csv))
    return outputs


def write_part_truth(path: Path, camera: str, truths: Sequence[PartTruth], fps: float) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(PART_COLUMNS)
        for truth in truths:
            part, whole = truth.part, truth.whole_frames
            writer.writerow(
                (
                    camera,
                    part.index,
                    part.label,
                    int(part.label != NORMAL_LABEL),
                    truth.frames[0],
                    truth.frames[-1],
                    whole[0] if whole else "",
                    whole[-1] if whole else "",
                    f"{truth.frames[0] / fps:.6f}",
                    f"{truth.frames[-1] / fps:.6f}",
                    part.source,
                )
            )
    return path


def write_frame_truth(path: Path, camera: str, rows: Sequence[tuple], fps: float) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(FRAME_COLUMNS)
        for frame, part_index, box, whole in rows:
            writer.writerow(
                (camera, frame, f"{frame / fps:.6f}", part_index, *_coords(box), int(whole))
            )
    return path


def _coords(box: PixelBox) -> tuple[int, int, int, int]:
    return (box.x1, box.y1, box.x2, box.y2)


def read_part_truth(path: Path) -> list[dict[str, str]]:
    """Rows of a parts truth CSV as dicts; ValueError when the columns are not there."""
    with path.open(newline="") as source:
        reader = csv.DictReader(source)
        if reader.fieldnames is None or set(PART_COLUMNS) - set(reader.fieldnames):
            raise ValueError(f"{path} is not a parts truth CSV with columns {PART_COLUMNS}")
        return list(reader)
