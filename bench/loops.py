"""Hand-written parts loops the line is compared with: the same work in one process.

Both decode the video, locate, track and crop each part's views with the pipeline's own
functions (`make_frame_views`), classify the crops with the shipped model and write one
row per view and one verdict row per part (mean of the top-2 view defect scores) to
SQLite with the line's pragmas. `batched`: 32 crops per predictor call, one
executemany + commit per batch. `naive`: one crop per call, one commit per row.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linewatch.pipeline.config import PartsSettings
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.prediction import predictions
from linewatch.pipeline.video.parts import ModelView, Pick, make_frame_views
from linewatch.pipeline.video.source import SourceOptions, open_frames
from linewatch.pipeline.video.tracking import PartRecord

SCHEMA = (
    "CREATE TABLE views (camera TEXT, part_id INT, view_index INT, label TEXT, score REAL,"
    " defect_score REAL, captured_ns INT)",
    "CREATE TABLE parts (camera TEXT, part_id INT, views INT, verdict TEXT, score REAL,"
    " decided_ns INT)",
)


@dataclass(frozen=True)
class LoopFigures:
    parts: int
    views: int
    seconds: float  # first decoded frame -> last commit
    phases: dict[str, float]  # seconds in decode + locate + track + crop, infer, SQL

    @property
    def parts_per_s(self) -> float:
        return self.parts / self.seconds

    @property
    def views_per_s(self) -> float:
        return self.views / self.seconds


@dataclass
class PartBook:
    """View defect scores per part until the part's verdict row is written."""

    threshold: float
    top_views: int = 2
    scores: dict[int, list[float]] = field(default_factory=dict)
    ended: list[PartRecord] = field(default_factory=list)

    def decided(self) -> list[tuple[object, ...]]:
        """Verdict rows of the ended parts whose every sent view has a score."""
        rows, waiting = [], []
        for record in self.ended:
            scores = self.scores.get(record.part_id, [])
            if len(scores) < record.views_sent:
                waiting.append(record)
                continue
            self.scores.pop(record.part_id, None)
            top = sorted(scores, reverse=True)[: self.top_views]
            score = sum(top) / len(top) if top else 0.0
            verdict = "uninspected" if not top else "defect" if score >= self.threshold else "ok"
            rows.append(("bench", record.part_id, len(scores), verdict, score, time.time_ns()))
        self.ended = waiting
        return rows


def _open(db: Path) -> sqlite3.Connection:
    db.unlink(missing_ok=True)
    connection = sqlite3.connect(db)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        connection.execute(f"PRAGMA {pragma}")
    for statement in SCHEMA:
        connection.execute(statement)
    connection.commit()
    return connection


def _picks(
    video: Path, parts: PartsSettings, view: ModelView, book: PartBook
) -> Iterator[tuple[Pick, np.ndarray]]:
    """Every view the line would send, cropped, in order; ended parts go to `book`."""
    ids = itertools.count(1)
    views = make_frame_views(
        parts, camera_id="bench", model_view=lambda: view, new_part_ids=lambda count: next(ids)
    )
    seqs = itertools.count(1)
    for frame in open_frames(str(video), SourceOptions()):
        selection = views.select([frame])
        for pick in selection.picks:
            pick.sent_as(next(seqs))
            yield pick, views.image(pick)
        book.ended += selection.ended
    book.ended += views.finish("stream-ended")


def _view_rows(
    classifier: Classifier, batch: list[tuple[Pick, np.ndarray]], book: PartBook
) -> list[tuple[object, ...]]:
    probs = classifier.predict([image for _, image in batch])
    normal = [classifier.info.labels.index(n) for n in classifier.info.normal_labels]
    rows = []
    for (pick, _), prediction, row in zip(
        batch, predictions(probs, classifier.info), probs, strict=True
    ):
        assert pick.view is not None and prediction is not None
        defect = float(1.0 - row[normal].sum())
        book.scores.setdefault(pick.view.part.part_id, []).append(defect)
        rows.append(
            (
                "bench",
                pick.view.part.part_id,
                len(book.scores[pick.view.part.part_id]) - 1,
                prediction.label,
                prediction.score,
                defect,
                pick.frame.capture_ts,
            )
        )
    return rows


def run_loop(
    video: Path,
    *,
    classifier: Classifier,
    parts: PartsSettings,
    view: ModelView,
    db: Path,
    batch_size: int,
) -> LoopFigures:
    """`batch_size` 32: the batched loop; 1: the naive loop (a commit per row)."""
    connection = _open(db)
    book = PartBook(threshold=classifier.info.defect_threshold)
    counts = {"parts": 0, "views": 0}
    phases = dict.fromkeys(("decode + locate + track + crop", "infer", "SQL"), 0.0)
    start = time.perf_counter()
    batch: list[tuple[Pick, np.ndarray]] = []

    def flush() -> None:
        began = time.perf_counter()
        views = _view_rows(classifier, batch, book) if batch else []
        finished = book.decided()
        wrote = time.perf_counter()
        phases["infer"] += wrote - began
        if batch_size == 1:
            for row in views:
                connection.execute("INSERT INTO views VALUES (?,?,?,?,?,?,?)", row)
                connection.commit()
            for row in finished:
                connection.execute("INSERT INTO parts VALUES (?,?,?,?,?,?)", row)
                connection.commit()
        else:
            connection.executemany("INSERT INTO views VALUES (?,?,?,?,?,?,?)", views)
            connection.executemany("INSERT INTO parts VALUES (?,?,?,?,?,?)", finished)
            connection.commit()
        counts["views"] += len(views)
        counts["parts"] += len(finished)
        batch.clear()
        phases["SQL"] += time.perf_counter() - wrote

    for item in _picks(video, parts, view, book):
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    flush()
    seconds = time.perf_counter() - start
    phases["decode + locate + track + crop"] = seconds - phases["infer"] - phases["SQL"]
    connection.close()
    return LoopFigures(parts=counts["parts"], views=counts["views"], seconds=seconds, phases=phases)
