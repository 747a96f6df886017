"""The gallery's opinion in the verdict (the classifier primary; `unknown` when too novel;
a class added from reviews) and where it shows: the parts row, the MQTT/pub-sub verdict,
the part alert and the API's part JSON; on SQLite and PostgreSQL (migration 0010)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml
from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session

from linewatch.pipeline.config import VerdictSettings
from linewatch.pipeline.decide.gallery_rule import GalleryRule
from linewatch.pipeline.decide.verdict import ModelLabels, decide, model_labels
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import migrate, reporting
from linewatch.pipeline.storage import parts_queries as queries
from linewatch.pipeline.streams import broker
from linewatch.schemas.decisions import UNKNOWN_LABEL, ViewResult
from linewatch.schemas.messages import PartVerdict, ResultMessage
from linewatch.workers import sink
from tests.support.builders import make_settings, part_end, view_result
from tests.support.receivers import ChannelListener
from tests.support.rows import part_row, write_parts
from tests.support.services import add_entries, copy_with_version, run_sink_until

LABELS = ("blowhole", "break", "crack", "free")
RULE = GalleryRule(novelty_threshold=0.4, top_views=2)
MODEL = ModelLabels("v1", LABELS, ("free",), 0.5, gallery=RULE)
SETTINGS = VerdictSettings(defect_threshold=0.5)
OK_TOPK = (("free", 0.95), ("crack", 0.05))
FREE = (("free", 0.9), ("crack", 0.06), ("break", 0.04))
CRACK = (("crack", 0.8), ("break", 0.15), ("free", 0.05))


def view(
    index: int, novelty: float | None, near: str | None, *topk: tuple[str, float]
) -> ViewResult:
    scores = topk or OK_TOPK
    crop = f"crop{index}".encode()
    return ViewResult(index, index, index / 10, "ok", "v1", scores, None, crop, novelty, near)


def test_without_a_gallery_the_verdict_is_as_before_with_null_fields() -> None:
    plain = ModelLabels("v1", LABELS, ("free",), 0.5)
    verdict = decide([view(0, 0.9, "free"), view(1, 0.9, "free")], plain, SETTINGS)
    assert (verdict.verdict, verdict.label, verdict.novelty, verdict.gallery_label) == (
        "ok",
        "free",
        None,
        None,
    )
    old_views = [view(0, None, None), view(1, None, None)]  # views of an older worker
    assert decide(old_views, MODEL, SETTINGS).novelty is None


def test_a_part_far_from_every_entry_is_unknown_and_its_most_novel_view_is_evidence() -> None:
    views = [view(0, 0.1, "free"), view(1, 0.7, "crack"), view(2, 0.5, "free")]
    verdict = decide(views, MODEL, SETTINGS)
    assert (verdict.verdict, verdict.label) == ("defect", UNKNOWN_LABEL)
    assert verdict.novelty == pytest.approx(0.6)  # mean of the two most novel views
    assert verdict.gallery_label == "free" and verdict.best is views[1]
    calm = [view(0, 0.1, "free"), view(1, 0.5, "free"), view(2, 0.2, "free")]
    assert decide(calm, MODEL, SETTINGS).verdict == "ok", "one novel view is not enough"


def test_a_class_added_from_reviews_makes_the_part_ng_with_its_name() -> None:
    views = [view(0, 0.1, "oil"), view(1, 0.2, "oil"), view(2, 0.05, "free")]
    verdict = decide(views, MODEL, SETTINGS)
    assert (verdict.verdict, verdict.label, verdict.gallery_label) == ("defect", "oil", "oil")
    one = [view(0, 0.1, "oil"), view(1, 0.2, "free"), view(2, 0.05, "free")]
    assert decide(one, MODEL, SETTINGS).verdict == "ok", "a single view does not outvote"
    known = [view(0, 0.1, "crack"), view(1, 0.2, "crack")]
    assert decide(known, MODEL, SETTINGS).verdict == "ok", "a class the classifier knows: its call"


def test_the_classifier_stays_primary() -> None:
    views = [view(0, 0.9, "oil", *CRACK), view(1, 0.8, "oil", *CRACK)]
    verdict = decide(views, MODEL, SETTINGS)
    assert (verdict.verdict, verdict.label) == ("defect", "crack")
    assert (verdict.novelty, verdict.gallery_label) == (pytest.approx(0.85), "oil")


def test_old_result_entries_decode_without_the_gallery_fields() -> None:
    message = view_result(1, 0, 1, FREE)
    fields = message.encode()
    assert b"novelty" not in fields and b"gallery_label" not in fields
    assert ResultMessage.decode(fields).novelty is None
    searched = ResultMessage(**{**message.__dict__, "novelty": 0.25, "gallery_label": "oil"})
    again = ResultMessage.decode(searched.encode())
    assert (again.novelty, again.gallery_label) == (0.25, "oil")
    old_verdict = (
        '{"camera_id": "c", "part_id": 1, "verdict": "ok", "label": "free", "score": 0.1, '
    )
    old_verdict += '"model_version": "v", "first_capture_ts": 1, "last_capture_ts": 2, '
    old_verdict += '"decided_ts": 3, "deadline_ts": 4, "views_sent": 1, "views_inferred": 1}'
    assert PartVerdict(**yaml.safe_load(old_verdict)).novelty is None  # an outbox entry


def gallery_model(tmp_path, threshold: float = 0.4):  # type: ignore[no-untyped-def]
    """A model folder with a Gallery section (the sink reads only the section)."""
    folder = copy_with_version(tmp_path, "v1")
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Gallery"] = {
        "file": "gallery.npz",
        "embedding_size": 8,
        "neighbours": 1,
        "novelty_threshold": threshold,
        "top_views": 2,
    }
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    return folder


def searched(message: ResultMessage, novelty: float, label: str) -> ResultMessage:
    evidence = b"\xff\xd8novel" if novelty >= 0.4 or label == "oil" else message.evidence
    values = {**message.__dict__, "novelty": novelty, "gallery_label": label}
    return ResultMessage(**{**values, "evidence": evidence})


def part_count(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(text("SELECT COUNT(*) FROM parts")) or 0)


def test_the_sink_stores_and_announces_the_gallery_opinion(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=database_url,
        inference={"model_dir": str(gallery_model(tmp_path))},
        verdict={"defect_threshold": 0.5, "deadline_ms": 60_000},
        outputs={
            "pubsub": {
                "alerts_channel": f"{line_name}:alerts",
                "verdicts_channel": f"{line_name}:verdicts",
            }
        },
    )
    assert model_labels(settings.inference.model_dir).gallery == RULE
    engine = storage.open_database(database_url)
    listener = ChannelListener(redis_client, f"{line_name}:alerts", f"{line_name}:verdicts")
    broker.ensure_group(redis_client, settings.results_stream, sink.GROUP)
    messages = (
        searched(view_result(1, 0, 1, FREE), 0.05, "free"),
        searched(view_result(1, 1, 2, FREE), 0.1, "free"),
        part_end(1, 2, 1, 2),
        searched(view_result(2, 0, 3, FREE), 0.6, "crack"),
        searched(view_result(2, 1, 4, FREE), 0.5, "free"),
        part_end(2, 2, 3, 4),
        searched(view_result(3, 0, 5, FREE), 0.1, "oil"),
        searched(view_result(3, 1, 6, FREE), 0.2, "oil"),
        part_end(3, 2, 5, 6),
    )
    add_entries(redis_client, settings.results_stream, [m.encode() for m in messages])
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: part_count(engine) == 3)
    listener.close()
    rows = {
        p["part_id"]: p for p in queries.list_parts(engine, queries.PartFilter(), 10, None).items
    }
    assert [(rows[i]["verdict"], rows[i]["label"]) for i in (1, 2, 3)] == [
        ("ok", "free"),
        ("defect", UNKNOWN_LABEL),
        ("defect", "oil"),
    ]
    assert rows[2]["novelty"] == pytest.approx(0.55) and rows[3]["gallery_label"] == "oil"
    assert rows[2]["evidence_url"] is not None, "the most novel view's crop is the evidence"
    verdicts = {v["part_id"]: v for v in listener.messages[f"{line_name}:verdicts"]}
    assert verdicts[1]["novelty"] == pytest.approx(0.075) and verdicts[1]["gallery_label"] == "free"
    assert (verdicts[2]["label"], verdicts[2]["verdict"]) == (UNKNOWN_LABEL, "defect")
    alerts = {a["part_id"]: a for a in listener.messages[f"{line_name}:alerts"]}
    assert sorted(alerts) == [2, 3] and alerts[3]["gallery_label"] == "oil"
    assert alerts[2]["novelty"] == pytest.approx(0.55)
    with Session(engine) as session:
        stored = session.execute(
            text("SELECT novelty, gallery_label FROM detections WHERE seq = 3")
        ).one()
    assert tuple(stored) == (pytest.approx(0.6), "crack")
    engine.dispose()


def test_0010_adds_the_gallery_columns_and_downgrades(database_url: str) -> None:
    engine = storage.create_database_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate._config(connection), "0009")  # noqa: SLF001
    migrate.upgrade(engine)
    with engine.begin() as connection:
        for table in ("detections", "parts"):
            connection.execute(text(f"SELECT novelty, gallery_label FROM {table}")).all()
        command.downgrade(migrate._config(connection), "0009")  # noqa: SLF001
    with engine.connect() as connection:
        assert migrate.current_revision(engine) == "0009"
        with pytest.raises(Exception):  # noqa: B017, PT011 (the column is gone)
            connection.execute(text("SELECT novelty FROM parts")).all()
    engine.dispose()


def test_unknown_parts_are_their_own_class_in_reports(database_url: str) -> None:
    engine = storage.open_database(database_url)
    start = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
    rows = [
        part_row("cam1", 1, start, "defect", UNKNOWN_LABEL),
        part_row("cam1", 2, start, "defect", UNKNOWN_LABEL),
        part_row("cam1", 3, start, "defect", "crack"),
        part_row("cam1", 4, start, "defect", "oil"),
        part_row("cam1", 5, start, "ok", "free"),
    ]
    write_parts(engine, rows)
    report = reporting.build_parts_report(engine, reporting.Window(start, start + timedelta(1)))
    assert [(p.label, p.ng) for p in report.pareto] == [
        (UNKNOWN_LABEL, 2),
        ("crack", 1),
        ("oil", 1),
    ]
    engine.dispose()


def test_the_line_may_set_its_own_novelty_threshold() -> None:
    views = [view(0, 0.3, "free"), view(1, 0.3, "free")]
    assert decide(views, MODEL, SETTINGS).verdict == "ok"  # the model's 0.4
    strict = VerdictSettings(defect_threshold=0.5, novelty_threshold=0.25)
    assert (decide(views, MODEL, strict).verdict, decide(views, MODEL, strict).label) == (
        "defect",
        UNKNOWN_LABEL,
    )
