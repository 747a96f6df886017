"""A shadow model: run on every frame, stored apart, never alerted on, compared in SQL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from time import time_ns

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from linewatch.pipeline.config import DEFAULT_MODEL_DIR
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import ResultMessage
from linewatch.schemas.tables import Alert, Detection, ShadowDetection
from linewatch.workers import inference, sink
from tests.support.builders import frame, make_settings, result
from tests.support.services import add_entries, copy_with_version, run_sink_until


def test_the_worker_runs_the_shadow_model_on_every_decoded_frame(
    redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, line_name, redis_url)
    live = Classifier(DEFAULT_MODEL_DIR, threads=1, max_batch=8)
    shadow = Classifier(copy_with_version(tmp_path, "shadow-1"), threads=1, max_batch=8)
    entries = [frame(seq) for seq in range(1, 6)]
    entries.append({**frame(6), b"image": b"\xff\xd8 not a jpeg"})
    broker.ensure_group(redis_client, settings.frames_stream, inference.GROUP)
    add_entries(redis_client, settings.frames_stream, entries)
    delivered = broker.read_group(
        redis_client, settings.frames_stream, inference.GROUP, "w1", 10, None
    )
    inference.FrameBatchHandler(redis_client, live, settings, "w1", shadow).handle(delivered)

    results = [ResultMessage.decode(f) for _, f in redis_client.xrange(settings.results_stream)]
    live_rows = [r for r in results if not r.shadow]
    shadow_rows = [r for r in results if r.shadow]
    assert [r.seq for r in live_rows] == [1, 2, 3, 4, 5, 6]
    assert live_rows[-1].status == "undecodable"
    assert [r.seq for r in shadow_rows] == [1, 2, 3, 4, 5], "only decoded frames"
    assert {r.model_version for r in shadow_rows} == {"shadow-1"}
    assert all(not r.evidence for r in shadow_rows)
    for mine, theirs in zip(live_rows, shadow_rows, strict=False):
        assert mine.label == theirs.label and np.isclose(mine.score, theirs.score, atol=1e-5)
    stats = redis_client.hgetall(settings.stats_key)
    assert int(stats[b"inferred"]) == 5, "shadow results are not counted as frames"


def test_shadow_results_are_stored_apart_never_alert_and_are_compared(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=database_url,
        verdict={"line_alarm": {"n": 3, "open_rate": 0.6, "close_rate": 0.0, "run": 2}},
    )
    live_labels = ["free"] * 8
    shadow_labels = ["free", "crack", "crack", "crack", "crack", "free", "free", "free"]
    messages = [result(seq, label) for seq, label in enumerate(live_labels, start=1)]
    messages += [
        replace(result(seq, label, version="v2"), shadow=True)
        for seq, label in enumerate(shadow_labels, start=1)
    ]
    broker.ensure_group(redis_client, settings.results_stream, sink.GROUP)
    add_entries(redis_client, settings.results_stream, [m.encode() for m in messages])
    engine = storage.open_database(database_url)
    counters = run_sink_until(
        redis_client,
        engine,
        settings,
        "sink-a",
        lambda: broker.backlog(redis_client, settings.results_stream) == 0,
    )
    assert counters.written == 8 and counters.replayed == 0
    storage.write_batch(engine, messages, sink_ts=9)  # a replay adds nothing
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Detection)) == 8
        assert session.scalar(select(func.count()).select_from(ShadowDetection)) == 8
        assert session.scalar(select(func.count()).select_from(Alert)) == 0, "shadow never alerts"
        comparison = session.execute(text("SELECT * FROM report_shadow_comparison")).mappings()
        rows = [dict(row) for row in comparison]
    engine.dispose()
    assert rows == [
        {
            "model_version": "v1",
            "shadow_version": "v2",
            "frames": 8,
            "same_label": 4,
            "defects": 0,
            "shadow_defects": 4,
            "only_live_defects": 0,
            "only_shadow_defects": 4,
        }
    ]


def test_pruning_deletes_old_shadow_rows(database_url) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from linewatch.pipeline.storage import retention

    engine = storage.open_database(database_url)
    old = [replace(result(seq), shadow=True, capture_ts=seq * 10**9) for seq in (1, 2)]
    recent = replace(result(3), shadow=True, capture_ts=time_ns())
    storage.write_batch(engine, [*old, recent], sink_ts=1)
    retention.prune(engine, timedelta(days=1))
    with Session(engine) as session:
        kept = session.scalars(select(ShadowDetection.seq)).all()
    engine.dispose()
    assert kept == [3]


def test_the_report_compares_the_shadow_model(database_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from linewatch.pipeline.storage import reporting
    from linewatch.report import tables

    engine = storage.open_database(database_url)
    now = time_ns()
    live = [replace(result(seq, "free"), capture_ts=now) for seq in range(1, 5)]
    shadow = [
        replace(result(seq, label, version="v2"), shadow=True, capture_ts=now)
        for seq, label in enumerate(["free", "crack", "free", "free"], start=1)
    ]
    storage.write_batch(engine, live + shadow, sink_ts=1)
    until = datetime.now(timezone.utc)
    window = reporting.Window(until.replace(year=until.year - 1), until, None)
    report = reporting.build_report(engine, window)
    engine.dispose()
    assert report.shadow == [reporting.ShadowComparison("v1", "v2", 4, 3, 0, 1, 0, 1)]
    assert report.frames == 4, "shadow rows are not counted as frames"
    header, rows = tables(report)["shadow_comparison"]
    assert rows == [("v1", "v2", 4, "3 (0.7500)", 0, 1, 0, 1)] and len(header) == 8
