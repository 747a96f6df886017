"""The gallery's `unknown` verdict on a moving line, leave-one-class-out.

    python bench/gallery_line_loco.py models/linewatch-tile runs/real runs/loco

For the model folder as it is, then for each defect class of the line's truth in turn:
the folder copied with that class's entries taken out of its `gallery.npz`, the line
(`VIDEO_DIR/cam1.mp4`, made by `linewatch simulate`: `cam1.parts.csv` is its truth) run
with `linewatch run` (default `contrast` locator), and each true part matched to the
stored part it overlaps most in time. Prints how many good parts and how many parts of
the left-out class reach the folder's `Gallery.novelty_threshold` (the gallery alone
would call them `unknown`), the good parts rejected, and the left-out parts' novelty.
Use a line of validation photos only (`linewatch simulate --split val`).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from linewatch.pipeline.gallery.store import GALLERY_FILE, load_gallery, save_gallery


def run_line(folder: Path, video: Path, out: Path, name: str) -> list[tuple]:
    """The stored parts (first_pts, last_pts, verdict, label, novelty) of one line run."""
    data = out / f"data-{name}"
    shutil.rmtree(data, ignore_errors=True)
    config = out / f"line-{name}.yaml"
    camera = {"id": "cam1", "url": str(video / "cam1.mp4"), "parts": {"method": "contrast"}}
    settings = {
        "line": "loco",
        "data_dir": str(data),
        "cameras": [camera],
        "inference": {"model_dir": str(folder)},
        "verdict": {"deadline_ms": 600_000},
    }
    config.write_text(yaml.safe_dump(settings))
    linewatch = str(Path(sys.executable).with_name("linewatch"))
    subprocess.run([linewatch, "run", "--config", str(config)], check=True, capture_output=True)
    with sqlite3.connect(data / "linewatch.db") as db:
        query = "select first_pts, last_pts, verdict, label, novelty from parts"
        return db.execute(query).fetchall()


def matched(truth: list[dict], rows: list[tuple]) -> list[tuple[dict, tuple]]:
    """Each true part with the stored part it overlaps most in time."""

    def overlap(part: dict, row: tuple) -> float:
        return min(float(part["last_pts"]), row[1]) - max(float(part["first_pts"]), row[0])

    return [(part, max(rows, key=lambda row: overlap(part, row))) for part in truth]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model folder with a gallery")
    parser.add_argument("video", type=Path, help="a `linewatch simulate --split val` folder")
    parser.add_argument("out", type=Path, help="scratch folder (model copies, line data)")
    args = parser.parse_args()
    spec = yaml.safe_load((args.model / "inference.yml").read_text())
    threshold = float(spec["Gallery"]["novelty_threshold"])
    truth = list(csv.DictReader((args.video / "cam1.parts.csv").open()))
    gallery = load_gallery(args.model / GALLERY_FILE)
    classes = sorted({part["label"] for part in truth if part["is_defect"] == "1"})
    print(f"{args.model}: novelty threshold {threshold}, {len(truth)} parts", flush=True)
    for left in ["", *classes]:
        folder = args.out / f"model-{left or 'all'}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(args.model, folder)
        save_gallery(folder / GALLERY_FILE, gallery.where(gallery.labels != left))
        pairs = matched(truth, run_line(folder, args.video, args.out, left or "all"))
        good = [row for part, row in pairs if part["is_defect"] == "0"]
        line = (
            f"left out {left or '(none)':9s}: good parts novel "
            f"{sum(row[4] >= threshold for row in good)}/{len(good)}, "
            f"good rejected {sum(row[2] != 'ok' for row in good)}/{len(good)}"
        )
        if left:
            mine = sorted(row[4] for part, row in pairs if part["label"] == left)
            novel = sum(value >= threshold for value in mine)
            line += f"; {left} parts novel {novel}/{len(mine)} {np.round(mine, 3).tolist()}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
