"""`linewatch line score` per part: the parts table against a truth CSV per part."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from linewatch.pipeline.simulation.line_evaluation import (
    StoredPart,
    TruthPart,
    read_part_truth,
    score_parts,
)
from linewatch.pipeline.storage import database as storage
from tests.support.builders import make_settings, part_end, view_result
from tests.support.services import add_entries, run_sink_until

FPS = 10.0


def truth_part(part: int, label: str, first: int, last: int) -> TruthPart:
    return TruthPart(part, label, label != "free", first, last)


TRUTH = [
    truth_part(0, "free", 0, 4),
    truth_part(1, "crack", 7, 11),
    truth_part(2, "break", 14, 18),
    truth_part(3, "free", 21, 25),
    truth_part(4, "free", 28, 32),
]


def stored(part_id: int, first: int, last: int, verdict: str, label: str, late=False) -> StoredPart:  # type: ignore[no-untyped-def]
    return StoredPart(part_id, first / FPS, last / FPS, verdict, label, late)


def test_part_figures_count_recall_false_rejects_ghosts_and_doubles() -> None:
    rows = [
        stored(1, 0, 4, "ok", "free"),
        stored(2, 7, 9, "defect", "crack"),
        stored(3, 10, 11, "defect", "crack"),  # the same tile reported twice
        stored(4, 14, 18, "ok", "free"),  # a defect missed
        stored(5, 21, 25, "defect", "fray"),  # a good part rejected
        stored(6, 40, 41, "ok", "free"),  # no tile there: a ghost
    ]  # truth part 4 has no row: missed
    score = score_parts(TRUTH, rows, FPS)
    assert (score.parts_in_truth, score.parts_counted, score.parts_matched) == (5, 6, 4)
    assert (score.ghost_parts, score.reported_twice, score.uninspected) == (1, 1, 0)
    assert (score.defective_rejected, score.defective_parts) == (1, 2)
    assert (score.good_rejected, score.good_parts) == (1, 2)
    assert score.defective_recall == 0.5 and score.false_reject_rate == 0.5
    assert (score.class_correct, score.class_scored) == (2, 4)


def test_uninspected_and_late_parts_are_rejects_unless_accepted() -> None:
    rows = [
        stored(1, 0, 4, "uninspected", "uninspected"),
        stored(2, 7, 11, "ok", "free", late=True),  # sent as uninspected at the deadline
    ]
    rejected = score_parts(TRUTH[:2], rows, FPS)
    assert (rejected.uninspected, rejected.good_rejected, rejected.defective_rejected) == (2, 1, 1)
    assert rejected.class_scored == 0
    accepted = score_parts(TRUTH[:2], rows, FPS, reject_uninspected=False)
    assert (accepted.good_rejected, accepted.defective_rejected) == (0, 0)


def write_truth(path: Path, camera: str = "cam") -> Path:
    lines = ["camera,part_index,label,first_frame,last_frame,is_defect"]
    lines += [
        f"{camera},{p.part},{p.label},{p.first_frame},{p.last_frame},{int(p.is_defect)}"
        for p in TRUTH
    ]
    lines.append("other,9,crack,0,4,1")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_part_truth_csv_columns_and_errors(tmp_path: Path) -> None:
    parts = read_part_truth(write_truth(tmp_path / "parts.csv"), "cam")
    assert [p.part for p in parts] == [0, 1, 2, 3, 4] and parts[1].is_defect
    simulated = tmp_path / "cam1.parts.csv"  # as `linewatch simulate` writes it
    simulated.write_text(
        "camera,part_index,label,is_defect,first_frame,last_frame,first_whole_frame,"
        "last_whole_frame,first_pts,last_pts,source\n"
        "cam1,0,crack,1,3,18,5,16,0.300000,1.800000,a.jpg\n"
        "cam1,1,free,0,20,35,,,2.000000,3.500000,b.jpg\n"
    )
    first, second = read_part_truth(simulated, "cam1")
    assert (first.part, first.is_defect, first.span(None)) == (0, True, (0.3, 1.8))
    assert (second.label, second.is_defect) == ("free", False)
    bad = tmp_path / "bad.csv"
    bad.write_text("part,label\n1,free\n")
    with pytest.raises(ValueError, match="no column first_frame, last_frame"):
        read_part_truth(bad)
    with pytest.raises(ValueError, match="fps"):
        score_parts(parts, [stored(1, 0, 4, "ok", "free")], None)


def test_evaluate_command_scores_the_parts_table(
    tmp_path, redis_client, redis_url, line_name, sqlite_url
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path, line_name, redis_url, database_url=sqlite_url, verdict={"defect_threshold": 0.5}
    )
    crack = (("crack", 0.9), ("free", 0.1))
    free = (("free", 0.95), ("crack", 0.05))
    messages = []
    for part_id, part in enumerate(TRUTH, start=1):
        first = part.first_frame + 1  # seq = frame + 1, pts = seq / 10 in the builders
        topk = crack if part.is_defect else free
        messages += [
            view_result(part_id, 0, first - 1, topk),
            view_result(part_id, 1, first + 2, topk),
        ]
        messages.append(part_end(part_id, 2, first - 1, first + 2))
    from linewatch.pipeline.streams import broker
    from linewatch.workers import sink

    broker.ensure_group(redis_client, settings.results_stream, sink.GROUP)
    add_entries(redis_client, settings.results_stream, [m.encode() for m in messages])
    engine = storage.open_database(sqlite_url)
    from linewatch.pipeline.storage.parts import camera_parts

    run_sink_until(
        redis_client, engine, settings, "s", lambda: len(camera_parts(engine, "cam")) == 5
    )
    engine.dispose()
    config = tmp_path / "line.yaml"
    config.write_text(f"database_url: {sqlite_url}\n")
    truth = write_truth(tmp_path / "parts.csv")
    command = [sys.executable, "-m", "linewatch.cli", "line", "score", "--config", str(config)]
    scoring = ["--parts-truth", str(truth), "--fps", "10", "--camera", "cam"]
    out = subprocess.run([*command, *scoring], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "deprecated" not in out.stderr
    assert "parts counted 5 (in truth 5, matched 5, missed 0, ghosts 0" in out.stdout
    assert "defective parts rejected 2/2 (recall 1.000)" in out.stdout
    assert "false-reject rate 0.000" in out.stdout
    old = [sys.executable, "-m", "linewatch.cli", "evaluate", "--config", str(config)]
    alias = subprocess.run([*old, *scoring], capture_output=True, text=True, timeout=120)
    assert alias.returncode == 0, alias.stderr  # the old name still works, for one release
    assert alias.stdout == out.stdout
    assert alias.stderr.strip().splitlines() == [
        "linewatch: `linewatch evaluate` is deprecated and goes in the next release; "
        "use `linewatch line score`"
    ]
    missing = subprocess.run([*command, "--camera", "cam"], capture_output=True, text=True)
    assert missing.returncode == 2 and "--parts-truth" in missing.stderr
