"""The locator's defaults on generated lines scored against the simulator's truth, and
`linewatch commission` on a line whose parts the defaults split (real video, real CLI)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from linewatch.cli import main
from linewatch.pipeline.config import PARTS_ADAPTER, ContrastParts, TrackedParts
from linewatch.pipeline.simulation.locate_score import LocateScore, score_frame, score_line
from linewatch.pipeline.simulation.moving_line import (
    MovingLineSpec,
    PlacedPart,
    TileImages,
    place_parts,
    render,
)
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.video.commission import LocatorCheck, SplitWatch, count_cut
from linewatch.pipeline.video.crop import PixelBox
from linewatch.pipeline.video.video_writer import write_video

DEFAULTS = ContrastParts()
BASE = {"width": 480, "height": 270, "part_size": 110, "frames_to_cross": 24, "parts": 12}
LINES = {
    # tiles around the belt's grey, darker and brighter than it in the same tile
    "dark tiles": MovingLineSpec(**BASE, tone=(0.45, 0.6), seed=1),
    "belt in the middle of the parts' greys": MovingLineSpec(
        **BASE, belt_level=90, tone=(0.45, 1.5), seed=2
    ),
    "textured belt": MovingLineSpec(**BASE, belt_grain=14, noise=5, seed=3),
    "near parts": MovingLineSpec(**BASE, min_gap=44, seed=4),
}


def scored(spec: MovingLineSpec, settings: TrackedParts, images: TileImages) -> LocateScore:
    parts = place_parts(spec, images, np.random.default_rng(spec.seed))
    rows: list[tuple] = []
    return score_line(render(spec, parts, rows), rows, settings, fps=spec.fps)


@pytest.mark.parametrize("name", list(LINES))
def test_the_defaults_find_every_part_whole(name: str) -> None:
    score = scored(LINES[name], DEFAULTS, TileImages())
    assert score.truth_parts == LINES[name].parts
    assert score.parts_counted == score.truth_parts, "counted exactly"
    assert score.whole_parts == 1.0, score.part_ious
    assert (score.ghosts, score.splits, score.merges) == (0, 0, 0)


def test_the_old_defaults_split_dark_tiles() -> None:
    """The same dark line with the locator's previous defaults: the scoring sees the cuts."""
    old = ContrastParts(polarity="brighter", min_contrast=12, noise_factor=0, merge_gap=0)
    score = scored(LINES["dark tiles"], old, TileImages())
    assert score.whole_parts < 0.9


def test_frame_scoring_names_ghosts_splits_and_merges() -> None:
    part_a, part_b = PixelBox(0, 0, 100, 100), PixelBox(120, 0, 220, 100)
    halves = [PixelBox(0, 0, 48, 100), PixelBox(52, 0, 100, 100)]
    assert score_frame(halves, [part_a]) == (0, 1, 0)
    assert score_frame([PixelBox(0, 0, 220, 100)], [part_a, part_b]) == (1, 0, 1)
    assert score_frame([PixelBox(300, 0, 320, 20), part_a], [part_a]) == (1, 0, 0)
    assert score_frame(halves, [part_a], [False]) == (0, 0, 0), "edge parts are not split"


def banded_tile(seed: int, size: int = 110) -> np.ndarray:
    """A tile with a band at the belt's grey across it, wider than a third of its size:
    the defaults see two pieces too far apart to join."""
    tile = make_tile(np.random.default_rng(seed), "free", size).astype(np.float32)
    tile[:, 42:84] = 40 + np.random.default_rng(seed).normal(0, 1.5, (size, 42))
    return np.clip(tile, 0, 255).astype(np.uint8)


def banded_line(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[tuple]]:
    spec = MovingLineSpec(**{**BASE, "parts": 6, "frames_to_cross": 16}, seed=5)
    parts = [
        PlacedPart(index, "free", banded_tile(index), -160.0 - 300 * index, 60 + 20 * (index % 4))
        for index in range(spec.parts)
    ]
    rows: list[tuple] = []
    frames = list(render(spec, parts, rows))
    return write_video(tmp_path / "banded.mp4", frames, spec.fps), frames, rows


def test_commission_prints_settings_that_join_split_parts(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    video, frames, rows = banded_line(tmp_path)
    assert scored_frames(frames, rows, DEFAULTS).splits > 0, "the defaults split these parts"
    config = tmp_path / "line.yaml"
    config.write_text(
        f"cameras:\n  - id: belt1\n    url: {video}\n    parts: {{method: contrast}}\n"
    )
    sheet = tmp_path / "sheet.png"
    assert main(["commission", "--config", str(config), "--sheet", str(sheet)]) == 0
    printed = capsys.readouterr().out
    block = yaml.safe_load(printed.split("(paste under the camera):\n", 1)[1])
    chosen = PARTS_ADAPTER.validate_python(block["parts"])
    assert isinstance(chosen, ContrastParts)
    score = scored_frames(frames, rows, chosen)
    assert (score.splits, score.merges, score.ghosts) == (0, 0, 0), printed
    assert score.whole_parts == 1.0 and score.parts_counted == 6
    image = cv2.cvtColor(cv2.imread(str(sheet)), cv2.COLOR_BGR2RGB).astype(int)
    left, right = np.array_split(image, 2, axis=1)
    orange = (
        (left[..., 0] > 200) & (left[..., 1].clip(100, 180) == left[..., 1]) & (left[..., 2] < 60)
    )
    green = (right[..., 1] > 180) & (right[..., 0] < 60) & (right[..., 2] < 60)
    assert orange.sum() > 500 and green.sum() > 500, "both columns show their boxes"


def scored_frames(
    frames: list[np.ndarray], rows: list[tuple], settings: TrackedParts
) -> LocateScore:
    return score_line(frames, rows, settings)


def test_a_camera_whose_parts_look_split_gets_one_warning(caplog) -> None:  # type: ignore[no-untyped-def]
    split = [PixelBox(0, 0, 40, 100), PixelBox(70, 0, 110, 100), PixelBox(300, 0, 400, 100)]
    watch = SplitWatch("cam9", seconds=2)
    for index in range(30):
        watch.see(split, index / 10)
    assert watch.done
    assert any("cam9" in r.message and "commission" in r.message for r in caplog.records)
    whole = [PixelBox(0, 0, 110, 100), PixelBox(300, 0, 400, 100)]
    quiet = SplitWatch("cam8", seconds=2)
    for index in range(30):
        quiet.see(whole, index / 10)
    assert quiet.done and not any("cam8" in r.message for r in caplog.records)


def test_a_one_way_threshold_with_either_polarity_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="parts.threshold otsu cuts one way"):
        ContrastParts(threshold="otsu", polarity="either")
    assert ContrastParts(threshold=90).sides == "brighter"
    assert ContrastParts().sides == "either"


def test_belts_tones_and_aspects_render_the_same_from_a_seed() -> None:
    spec = MovingLineSpec(
        **{**BASE, "parts": 3}, belt_level=90, belt_grain=12, tone=(0.5, 1.5), aspect=(0.3, 2.6)
    )

    def frames(seed: int) -> np.ndarray:
        line = MovingLineSpec(**{**spec.__dict__, "seed": seed})
        parts = place_parts(line, TileImages(), np.random.default_rng(seed))
        return np.stack(list(render(line, parts, []))[:20])

    first = frames(3)
    assert np.array_equal(first, frames(3))
    assert not np.array_equal(first, frames(4))
    assert abs(float(np.median(first)) - 90) < 6, "the belt sits at its configured grey"


def test_a_box_holding_part_of_what_another_candidate_boxes_is_cut() -> None:
    whole = LocatorCheck(DEFAULTS, boxes=[[PixelBox(0, 0, 100, 100), PixelBox(200, 0, 300, 100)]])
    cut = LocatorCheck(DEFAULTS, boxes=[[PixelBox(0, 0, 60, 100), PixelBox(200, 0, 300, 100)]])
    merged = LocatorCheck(DEFAULTS, boxes=[[PixelBox(0, 0, 300, 100)]])
    assert count_cut(cut, [whole, cut]) == 1
    assert count_cut(whole, [whole, cut]) == 0
    assert count_cut(whole, [merged]) == 0, "a box around two parts cuts none of them"


def test_pieces_side_by_side_either_way_join_and_separate_parts_stay_apart() -> None:
    from linewatch.pipeline.video.locate import join_pieces

    left_right = [PixelBox(0, 0, 40, 120), PixelBox(70, 5, 110, 118)]  # a band across
    above_below = [PixelBox(0, 0, 120, 30), PixelBox(4, 60, 118, 120)]  # a band along
    apart = [PixelBox(0, 0, 100, 100), PixelBox(160, 0, 260, 100)]  # 60 px: two parts
    assert join_pieces(left_right, gap=None) == [PixelBox(0, 0, 110, 120)]
    assert join_pieces(above_below, gap=None) == [PixelBox(0, 0, 120, 120)]
    assert join_pieces(apart, gap=None) == apart
    assert join_pieces(left_right, gap=0) == left_right
