"""The moving-line simulator: videos from synthetic tiles or photos, with truth CSVs."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import av
import pytest

from linewatch.cli import main
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.simulation.moving_line import (
    FRAME_COLUMNS,
    MovingLineSpec,
    read_part_truth,
    simulate_moving,
)
from linewatch.pipeline.simulation.synthetic import write_image_folder
from linewatch.pipeline.training.splits import split_items

SMALL = ["--width", "192", "--height", "128", "--fps", "10"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as source:
        return list(csv.DictReader(source))


def test_a_moving_line_and_its_truth_agree(tmp_path: Path) -> None:
    spec = MovingLineSpec(parts=16, width=256, height=192, part_size=72, frames_to_cross=10)
    ((video, parts_csv, frames_csv),) = simulate_moving(tmp_path, spec, items=())
    with av.open(str(video)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    parts, frames = read_part_truth(parts_csv), rows(frames_csv)
    assert len(parts) == 16 and list(frames[0]) == list(FRAME_COLUMNS)
    for part in parts:
        first, last = int(part["first_frame"]), int(part["last_frame"])
        assert first < int(part["first_whole_frame"]) <= int(part["last_whole_frame"]) < last
        assert part["is_defect"] == str(int(part["label"] != "free"))
        assert float(part["first_pts"]) == pytest.approx(first / spec.fps)
    assert max(int(r["frame"]) for r in frames) < decoded
    in_view = Counter(Counter(r["frame"] for r in frames).values())
    empty = decoded - len({r["frame"] for r in frames})
    assert empty > 0 and in_view[1] > 0 and in_view[2] > 0, "0, 1 and 2 parts in view"
    heights = {int(r["y2"]) - int(r["y1"]) for r in frames if r["whole"] == "1"}
    assert len(heights) > 5, "part sizes vary"
    left = [int(r["x1"]) for r in frames if r["part_index"] == "0"]
    assert left == sorted(left) and left[-1] > left[0], "parts move left to right"


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "photos", 3, size=96, labels=("crack", "free"))


def test_simulate_images_uses_the_photos(photos: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sim"
    assert (
        main(["simulate", "--out", str(out), "--images", str(photos), "--parts", "6", *SMALL]) == 0
    )
    assert "cam1.mp4" in capsys.readouterr().out
    parts = read_part_truth(out / "cam1.parts.csv")
    assert len(parts) == 6
    assert all(Path(p["source"]).parent.parent == photos for p in parts)
    assert all(Path(p["source"]).parent.name == p["label"] for p in parts)


def test_simulate_split_file_uses_only_that_split(photos: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in photos.rglob("*.png"))
    val = [f for f in files if f.endswith("00000.png")]
    labels = ["crack", "free"]
    split = {
        "labels": labels,
        "train": [[f, labels.index(Path(f).parent.name)] for f in files if f not in val],
        "val": [[f, labels.index(Path(f).parent.name)] for f in val] + [["synthetic:crack:1", 0]],
    }
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(split))
    out = tmp_path / "sim"
    args = ["simulate", "--out", str(out), "--split-file", str(split_file), "--parts", "8"]
    assert main([*args, "--split", "val", *SMALL]) == 0
    assert {p["source"] for p in read_part_truth(out / "cam1.parts.csv")} <= set(val)


def test_a_split_files_relative_paths_are_found_from_another_folder(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped split.json names photos relative to the repository root: simulate finds
    them from a folder above the split file when run from anywhere else."""
    files = sorted(p.relative_to(tmp_path) for p in photos.rglob("*.png"))
    split = {"labels": ["crack", "free"], "train": [], "val": [[str(f), 0] for f in files]}
    split_file = tmp_path / "models" / "tile" / "split.json"
    split_file.parent.mkdir(parents=True)
    split_file.write_text(json.dumps(split))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    items = split_items(split_file, "val", photos)
    assert sorted(Path(path) for path, _ in items) == sorted(tmp_path / f for f in files)


def test_simulate_errors_are_named(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = ["simulate", "--out", str(tmp_path), "--split-file", str(tmp_path / "no.json")]
    assert main(missing) == 2
    assert "split file" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path), "--images", str(tmp_path / "none")]) == 2
    assert "image folder" in capsys.readouterr().err
    with pytest.raises(LinewatchError, match="must be even"):
        MovingLineSpec(width=191)


def test_the_stepped_layout_is_still_there(tmp_path: Path) -> None:
    args = ["simulate", "--layout", "stepped", "--out", str(tmp_path), "--parts", "3"]
    assert main([*args, "--frames-per-part", "2"]) == 0
    assert len(rows(tmp_path / "cam1.csv")) == 6
