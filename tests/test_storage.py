import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.pipeline.alerts.rule import DefectEvent
from linewatch.pipeline.errors import ConfigError, ServiceUnavailable
from linewatch.pipeline.storage import database as storage
from linewatch.schemas.tables import Alert, Detection
from tests.helpers import count_detections, result


@pytest.fixture()
def engine(database_url):  # type: ignore[no-untyped-def]
    engine = storage.open_database(database_url)
    yield engine
    engine.dispose()


def test_replay_inserts_nothing_twice(engine) -> None:  # type: ignore[no-untyped-def]
    inserted, _ = storage.write_batch(engine, [result(1), result(2)], [], sink_ts=5)
    assert inserted == 2
    inserted, _ = storage.write_batch(engine, [result(2), result(3)], [], sink_ts=6)
    assert inserted == 1
    inserted, _ = storage.write_batch(engine, [result(3, version="v2")], [], sink_ts=7)
    assert inserted == 1, "another model version of the same frame is a new row"
    assert count_detections(engine) == 4


def test_events_open_once_and_close(engine) -> None:  # type: ignore[no-untyped-def]
    opened = DefectEvent(
        "cam", "crack", "open", opened_seq=4, opened_ts=4, peak_score=0.9, frames=3
    )
    _, first = storage.write_batch(engine, [], [(opened, b"jpeg")], sink_ts=1)
    _, again = storage.write_batch(engine, [], [(opened, b"jpeg")], sink_ts=2)
    assert first[0].is_new and not again[0].is_new
    assert first[0].alert_id == again[0].alert_id
    assert storage.open_events(engine)[0].opened_seq == 4
    closed = DefectEvent(
        "cam", "crack", "closed", 4, 4, closed_seq=9, closed_ts=9, peak_score=0.95, frames=5
    )
    _, done = storage.write_batch(engine, [], [(closed, b"")], sink_ts=3)
    _, replay = storage.write_batch(engine, [], [(closed, b"")], sink_ts=4)
    assert done[0].is_new and not replay[0].is_new
    with Session(engine) as session:
        row = session.scalars(select(Alert)).one()
        assert (row.state, row.closed_seq, row.frames, row.evidence) == ("closed", 9, 5, b"jpeg")
    assert storage.open_events(engine) == []


def test_rows_keep_every_hop(engine) -> None:  # type: ignore[no-untyped-def]
    storage.write_batch(engine, [result(1, "crack")], [], sink_ts=42)
    with Session(engine) as session:
        row = session.scalars(select(Detection)).one()
    assert (row.label, row.is_defect, row.sink_ts, row.topk) == ("crack", True, 42, "crack:0.8000")


def test_bad_database_url_is_named() -> None:
    with pytest.raises(ConfigError, match="bad database URL nosuchdb://u:\\*\\*\\*@h/x"):
        storage.open_database("nosuchdb://u:secret@h/x")


def test_unreachable_database_is_named_without_password() -> None:
    with pytest.raises(ServiceUnavailable, match="cannot reach database") as info:
        storage.open_database("postgresql+psycopg://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)
