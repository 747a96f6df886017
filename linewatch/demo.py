"""`linewatch demo`: a synthetic line video analysed end to end on the embedded defaults."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.line import LineStats, run_line
from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.simulation.synthetic import NORMAL_LABEL, line_labels, make_tile
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.video.video_writer import write_video
from linewatch.schemas.tables import Alert, Detection

CAMERA_ID = "demo-cam"
TILE_SIZE = 224


def write_demo_video(path: Path, frames: int, fps: float, seed: int = 7) -> list[str]:
    """Write the demo line video; returns the true label of every frame."""
    labels = line_labels(frames, defect_every=40, run_length=8, seed=seed)
    rng = np.random.default_rng(seed)
    images = (np.repeat(make_tile(rng, label, TILE_SIZE)[..., None], 3, axis=2) for label in labels)
    write_video(path, images, fps)
    return labels


def demo_settings(data_dir: Path, video: Path) -> Settings:
    return load_settings(
        overrides={
            "line": "demo",
            "data_dir": str(data_dir),
            "cameras": [{"id": CAMERA_ID, "url": str(video), "live": False}],
        }
    )


def run_demo(data_dir: Path, frames: int, fps: float, debug: bool = False) -> int:
    console = Console()
    data_dir.mkdir(parents=True, exist_ok=True)
    video = data_dir / "demo-line.mp4"
    truth = write_demo_video(video, frames, fps)
    settings = demo_settings(data_dir, video)
    database = Path(settings.resolved_database_url().removeprefix("sqlite:///"))
    if not settings.database_url:
        database.unlink(missing_ok=True)
    console.print(
        f"demo video: {video} ({frames} frames, {sum(t != NORMAL_LABEL for t in truth)} defective)"
    )
    started = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task("analysing", total=frames)
        stats = run_line(settings, debug, lambda s: progress.update(task, completed=s.written))
    elapsed = time.monotonic() - started
    console.print(_summary(settings, stats, truth, elapsed))
    return 0 if stats.decoded == stats.inferred == stats.written > 0 else 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@dataclass(frozen=True)
class DemoFigures:
    defects: int
    alerts: int
    correct: int
    frames_per_s: float
    p50_ms: float
    p99_ms: float


def _figures(settings: Settings, truth: list[str]) -> DemoFigures:
    """Read back what the line wrote: accuracy against the truth, speed and latency."""
    engine = open_database(settings.resolved_database_url())
    with Session(engine) as session:
        rows = session.execute(
            select(
                Detection.seq,
                Detection.label,
                Detection.is_defect,
                Detection.capture_ts,
                Detection.sink_ts,
            )
        ).all()
        alerts = session.scalar(select(func.count()).select_from(Alert)) or 0
    engine.dispose()
    if not rows:
        return DemoFigures(0, int(alerts), 0, 0.0, 0.0, 0.0)
    latency_ms = np.array([r.sink_ts - r.capture_ts for r in rows], np.float64) / 1e6
    span_s = (max(r.sink_ts for r in rows) - min(r.capture_ts for r in rows)) / 1e9
    correct = sum(1 for r in rows if 0 < r.seq <= len(truth) and r.label == truth[r.seq - 1])
    return DemoFigures(
        defects=sum(1 for r in rows if r.is_defect),
        alerts=int(alerts),
        correct=correct,
        frames_per_s=len(rows) / span_s if span_s > 0 else 0.0,
        p50_ms=float(np.percentile(latency_ms, 50)),
        p99_ms=float(np.percentile(latency_ms, 99)),
    )


def _summary(settings: Settings, stats: LineStats, truth: list[str], elapsed: float) -> Table:
    figures = _figures(settings, truth)
    table = Table(title="linewatch demo", show_header=False)
    table.add_row(
        "frames decoded / inferred / written",
        f"{stats.decoded} / {stats.inferred} / {stats.written}",
    )
    table.add_row("labels matching the truth", f"{figures.correct} / {len(truth)}")
    table.add_row("defective frames", str(figures.defects))
    table.add_row("alerts (defect events)", str(figures.alerts))
    table.add_row("throughput (first capture → last write)", f"{figures.frames_per_s:.1f} frames/s")
    table.add_row("wall time (with start-up)", f"{elapsed:.1f} s")
    table.add_row(
        "frame→result latency p50 / p99", f"{figures.p50_ms:.0f} ms / {figures.p99_ms:.0f} ms"
    )
    table.add_row("database", settings.resolved_database_url())
    return table
