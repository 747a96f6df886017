"""`linewatch demo`: a moving line of synthetic tiles analysed in parts mode on the embedded
defaults, with `--serve` the dashboard beside it and after it; `write_demo_video` keeps the
frame-mode video the frame-mode tests use."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.api.server import serve
from linewatch.line import LineStats, redis_for, run_line
from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.simulation.line_evaluation import (
    PartScore,
    StoredPart,
    TruthPart,
    read_part_truth,
    score_parts,
)
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.simulation.synthetic import line_labels, make_tile
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.storage.parts import camera_parts
from linewatch.pipeline.video.video_writer import write_video
from linewatch.schemas.tables import Part

CAMERA_ID = "demo-cam"
TILE_SIZE = 224


def write_demo_video(path: Path, frames: int, fps: float, seed: int = 7) -> list[str]:
    """Write the demo line video; returns the true label of every frame."""
    labels = line_labels(frames, defect_every=40, run_length=8, seed=seed)
    rng = np.random.default_rng(seed)
    images = (np.repeat(make_tile(rng, label, TILE_SIZE)[..., None], 3, axis=2) for label in labels)
    write_video(path, images, fps)
    return labels


DEMO_PARTS = {"method": "contrast"}  # the locator's defaults


def demo_settings(data_dir: Path, video: Path, serve_port: int | None = None) -> Settings:
    camera = {"id": CAMERA_ID, "url": str(video), "live": False, "parts": DEMO_PARTS}
    overrides = {"line": "demo", "data_dir": str(data_dir), "cameras": [camera]}
    if serve_port is not None:  # the token, if any, still comes from LINEWATCH_API__TOKEN
        overrides["api"] = {"enabled": True, "port": serve_port}
    return load_settings(overrides=overrides)


def run_demo(
    data_dir: Path, parts: int, fps: float, *, debug: bool = False, serve_port: int | None = None
) -> int:
    """A moving line of synthetic tiles analysed in parts mode; prints the part figures.
    `serve_port`: the dashboard runs beside the line, then serves its parts until Ctrl-C."""
    console = Console()
    data_dir.mkdir(parents=True, exist_ok=True)
    spec = MovingLineSpec(parts=parts, fps=fps, seed=7)
    ((video, parts_csv, _),) = simulate_moving(data_dir, spec)
    settings = demo_settings(data_dir, video, serve_port)
    database = Path(settings.resolved_database_url().removeprefix("sqlite:///"))
    if not settings.database_url:
        database.unlink(missing_ok=True)
    truth = read_part_truth(parts_csv, "cam1")
    console.print(
        f"demo line: {video} ({len(truth)} parts, {sum(p.is_defect for p in truth)} defective)"
    )
    if serve_port is None:
        return _analyse(console, settings, truth, fps, debug)
    with redis_for(settings) as settings:  # one Redis for the line and the dashboard after it
        console.print(f"dashboard: http://{settings.api.host}:{serve_port}/ (Ctrl-C stops it)")
        code = _analyse(console, settings, truth, fps, debug)
        console.print(f"the line is done; the dashboard keeps serving its parts on :{serve_port}")
        serve(settings)
    return code


def _analyse(
    console: Console, settings: Settings, truth: list[TruthPart], fps: float, debug: bool
) -> int:
    started = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task("analysing (views written)", total=None)
        stats = run_line(settings, debug, lambda s: progress.update(task, completed=s.written))
    elapsed = time.monotonic() - started
    score, latency = _part_figures(settings, truth, fps)
    console.print(_summary(settings, stats, score, latency, elapsed))
    return 0 if score.parts_matched > 0 and stats.inferred == stats.written else 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _part_figures(
    settings: Settings, truth: list[TruthPart], fps: float
) -> tuple[PartScore, tuple[float, float]]:
    """The parts table against the truth, and capture→verdict latency p50 / p99 in ms."""
    engine = open_database(settings.resolved_database_url())
    stored = [StoredPart(*row) for row in camera_parts(engine, CAMERA_ID)]
    with Session(engine) as session:
        rows = session.execute(select(Part.last_capture_ts, Part.decided_ts)).all()
    engine.dispose()
    score = score_parts(truth, stored, fps)
    if not rows:
        return score, (0.0, 0.0)
    latency_ms = np.array([decided - captured for captured, decided in rows], np.float64) / 1e6
    return score, (float(np.percentile(latency_ms, 50)), float(np.percentile(latency_ms, 99)))


def _summary(
    settings: Settings,
    stats: LineStats,
    score: PartScore,
    latency: tuple[float, float],
    elapsed: float,
) -> Table:
    table = Table(title="linewatch demo (parts mode)", show_header=False)
    table.add_row("parts counted / in truth", f"{score.parts_counted} / {score.parts_in_truth}")
    table.add_row(
        "NG parts (defect or uninspected)", str(score.defective_rejected + score.good_rejected)
    )
    table.add_row(
        "defective parts caught (recall)",
        f"{score.defective_rejected} / {score.defective_parts} ({score.defective_recall:.2f})",
    )
    table.add_row(
        "good parts rejected (false rejects)",
        f"{score.good_rejected} / {score.good_parts} ({score.false_reject_rate:.2f})",
    )
    table.add_row("ghost parts / reported twice", f"{score.ghost_parts} / {score.reported_twice}")
    table.add_row("uninspected parts", str(score.uninspected))
    table.add_row("views inferred / written", f"{stats.inferred} / {stats.written}")
    table.add_row(
        "last capture → verdict p50 / p99",
        f"{latency[0]:.0f} ms / {latency[1]:.0f} ms",
    )
    table.add_row("wall time (with start-up)", f"{elapsed:.1f} s")
    table.add_row("database", settings.resolved_database_url())
    return table
