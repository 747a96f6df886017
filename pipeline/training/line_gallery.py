"""A gallery from simulated line video of the training photos (`linewatch gallery build`).

The gallery `gallery_export` makes holds synthetic line views of the training photos;
on a real moving line (H.264, its belt, its light) good parts sit far from them. This
gallery holds the parts of moving-line videos made of the training photos
(`linewatch simulate --split train`): each part's whole views, cut from the decoded video
with the line's own crop code (`crop_view`, the model's `Linewatch.crop_margin`, the
model's input size) at the video's true boxes, `VIEWS_PER_PART` spread over the frames
where it is whole, embedded by the graph's embedding output (RGB crops, as the worker
sends them) and labelled from the video's truth (source `line:<photo>#<frame>`).

The novelty threshold is chosen out of fold: the photos are dealt into
`HELD_OUT_FOLDS` folds (stratified by class), each part is searched against the entries
of the other folds' photos, a part's novelty is the mean of its `top_views` most novel
views (as the line scores it), and the threshold lets at most `MAX_FALSE_REJECTS` of these
known parts reach it. Only training photos may be used: a video holding a photo outside
the split's training list is refused.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.gallery.search import part_novelty, search
from linewatch.pipeline.gallery.store import GALLERY_FILE, Gallery, save_gallery
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.training.gallery_export import (
    EMBED_CHUNK,
    HELD_OUT_FOLDS,
    MAX_FALSE_REJECTS,
    NEIGHBOURS,
    TOP_VIEWS,
    rejecting_threshold,
)
from linewatch.pipeline.training.teacher import photo_folds
from linewatch.pipeline.video.crop import DEFAULT_MARGIN, PixelBox, video_crops

VIEWS_PER_PART = 4
CAMERA = "cam1"
SYNTHETIC = "synthetic"  # the source `linewatch simulate` writes for a generated tile


@dataclass(frozen=True)
class LinePart:
    video: Path
    index: int
    label: str
    photo: str  # the source photo, `class/file` (or the synthetic source)
    frames: tuple[tuple[int, PixelBox], ...]  # the chosen whole frames and true boxes


def photo_key(source: str, video_dir: Path, index: int) -> str:
    """A photo's name independent of where the dataset lies: `<class dir>/<file>`; a
    generated tile (source `synthetic`) is its own photo, `synthetic:<video>/<part>`."""
    if source == SYNTHETIC:
        return f"{SYNTHETIC}:{video_dir.name}/{index}"
    return "/".join(Path(source).parts[-2:])


def read_parts(video_dir: Path, views: int = VIEWS_PER_PART) -> list[LinePart]:
    """The video's parts with `views` whole frames each, spread evenly over its whole
    frames (parts never whole in the video are skipped)."""
    parts_csv = video_dir / f"{CAMERA}.parts.csv"
    frames_csv = video_dir / f"{CAMERA}.frames.csv"
    for path in (video_dir / f"{CAMERA}.mp4", parts_csv, frames_csv):
        if not path.is_file():
            raise LinewatchError(
                f"{path} is missing: --line-video takes a `linewatch simulate --split train` folder"
            )
    whole: dict[int, list[tuple[int, PixelBox]]] = defaultdict(list)
    with frames_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row["whole"] == "1":
                box = PixelBox(*(int(float(row[k])) for k in ("x1", "y1", "x2", "y2")))
                whole[int(row["part_index"])].append((int(row["frame"]), box))
    out = []
    with parts_csv.open() as handle:
        for row in csv.DictReader(handle):
            index = int(row["part_index"])
            seen = sorted(whole.get(index, []), key=lambda item: item[0])
            if not seen:
                continue
            picks = np.unique(np.linspace(0, len(seen) - 1, views).round().astype(int))
            out.append(
                LinePart(
                    video_dir,
                    index,
                    row["label"],
                    photo_key(row["source"], video_dir, index),
                    tuple(seen[i] for i in picks),
                )
            )
    return out


def cut_views(
    video_dir: Path, parts: list[LinePart], size: tuple[int, int], margin: float
) -> dict[tuple[int, int], np.ndarray]:
    """The RGB crops {(part index, frame): view} of these parts' chosen frames."""
    wanted: dict[int, list[tuple[int, PixelBox]]] = defaultdict(list)
    for part in parts:
        for frame, box in part.frames:
            wanted[frame].append((part.index, box))
    return video_crops(video_dir / f"{CAMERA}.mp4", wanted, size=size, margin=margin)  # type: ignore[return-value]


@dataclass(frozen=True)
class LineGallery:
    gallery: Gallery
    part_of_entry: np.ndarray  # [M] the entry's part (row in `parts`)
    parts: list[LinePart]


def line_gallery(
    classifier: Classifier,
    video_dirs: list[Path],
    *,
    training_photos: set[str] | None = None,
    views: int = VIEWS_PER_PART,
) -> LineGallery:
    """The labelled embeddings of every part's views in these videos."""
    width, height = classifier.preprocessor.output_size
    margin = classifier.info.crop_margin
    margin = DEFAULT_MARGIN if margin is None else margin
    embeddings, labels, sources, owner, all_parts = [], [], [], [], []
    for video_dir in video_dirs:
        parts = read_parts(video_dir, views)
        if training_photos is not None:
            foreign = sorted({p.photo for p in parts} - training_photos)
            if foreign:
                raise LinewatchError(
                    f"{video_dir} shows {len(foreign)} photos that are not in the split's "
                    f"training list (e.g. {foreign[0]}): simulate it with --split train"
                )
        crops = cut_views(video_dir, parts, (width, height), margin)
        batch, names = [], []
        for part in parts:
            for frame, _ in part.frames:
                batch.append(crops[(part.index, frame)])
                names.append((len(all_parts), part.label, f"line:{part.photo}#{frame}"))
            all_parts.append(part)
        for start in range(0, len(batch), EMBED_CHUNK):
            _, embedded = classifier.predict_with_embeddings(batch[start : start + EMBED_CHUNK])
            if embedded is None:
                raise LinewatchError("the model's graph has no embedding output (output 1)")
            embeddings.append(embedded)
        owner += [n[0] for n in names]
        labels += [n[1] for n in names]
        sources += [n[2] for n in names]
    if not all_parts:
        raise LinewatchError("the videos hold no part that is ever whole in view")
    return LineGallery(
        Gallery.of(np.concatenate(embeddings), labels, sources), np.array(owner), all_parts
    )


def out_of_fold_parts(line: LineGallery, top_views: int, seed: int) -> np.ndarray:
    """Each part's novelty against the entries of the other folds' photos."""
    photos = sorted({part.photo for part in line.parts})
    label_of = {part.photo: part.label for part in line.parts}
    names = sorted(set(label_of.values()))
    targets = np.array([names.index(label_of[photo]) for photo in photos])
    folds = max(2, min(HELD_OUT_FOLDS, len(photos)))
    fold_of_photo = dict(zip(photos, photo_folds(targets, folds, seed), strict=True))
    part_fold = np.array([fold_of_photo[part.photo] for part in line.parts])
    entry_fold = part_fold[line.part_of_entry]
    view_novelty = np.zeros(len(line.gallery), np.float32)
    for k in np.unique(entry_fold):
        mine = entry_fold == k
        view_novelty[mine] = search(
            line.gallery.where(~mine), line.gallery.embeddings[mine]
        ).novelty
    return np.array(
        [
            part_novelty(view_novelty[line.part_of_entry == i].tolist(), top_views)
            for i in range(len(line.parts))
        ]
    )


def build_line_gallery(
    classifier: Classifier,
    video_dirs: list[Path],
    out_dir: Path,
    *,
    training_photos: set[str] | None = None,
    seed: int = 0,
) -> dict:
    """Write `out_dir/gallery.npz` of the videos' parts; returns the `Gallery:` section."""
    line = line_gallery(classifier, video_dirs, training_photos=training_photos)
    parts = out_of_fold_parts(line, TOP_VIEWS, seed)
    threshold = rejecting_threshold(parts, MAX_FALSE_REJECTS)
    save_gallery(out_dir / GALLERY_FILE, line.gallery)
    return {
        "file": GALLERY_FILE,
        "embedding_size": line.gallery.size,
        "neighbours": NEIGHBOURS,
        "novelty_threshold": threshold,
        "top_views": TOP_VIEWS,
        "novelty_from": (
            f"out-of-fold training photos ({HELD_OUT_FOLDS} folds) as parts of "
            f"{len(video_dirs)} simulated moving-line video(s) ({len(line.parts)} parts, "
            f"{VIEWS_PER_PART} whole views each, top-{TOP_VIEWS} mean), "
            f"<= {MAX_FALSE_REJECTS:.1%} false rejects"
        ),
        "entries": len(line.gallery),
        "max_false_rejects": MAX_FALSE_REJECTS,
        "selection_false_reject_rate": round(float((parts >= threshold).mean()), 6),
    }


def training_photos(split_file: Path) -> set[str]:
    """The split's training photos, as `photo_key` names them."""
    from linewatch.pipeline.training import data

    split = data.Split.load(split_file)
    return {photo_key(item, Path("."), 0) for item, _ in split.train}


def rebuild_folder(
    model_dir: Path, video_dirs: list[Path], *, split_file: Path | None, seed: int = 0
) -> dict:
    """Replace the model folder's `gallery.npz` and the `Gallery:` section of its
    inference.yml (nothing else) by the line videos' gallery; returns the section."""
    import yaml

    config_path = model_dir / "inference.yml"
    config = yaml.safe_load(config_path.read_text())
    if "Gallery" not in config:
        raise LinewatchError(
            f"{model_dir} has no `Gallery:` section: its graph has no embedding output "
            "(export it with one first, `linewatch train-embedding` + `linewatch export`)"
        )
    classifier = Classifier(model_dir, max_batch=32)
    photos = training_photos(split_file) if split_file is not None else None
    section = build_line_gallery(
        classifier, video_dirs, model_dir, training_photos=photos, seed=seed
    )
    config["Gallery"] = section
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return section
