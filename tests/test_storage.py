import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.pipeline.errors import ConfigError, ServiceUnavailable
from linewatch.pipeline.storage import database as storage
from linewatch.schemas.tables import Detection
from tests.support.builders import result
from tests.support.rows import count_detections


@pytest.fixture()
def engine(database_url):  # type: ignore[no-untyped-def]
    engine = storage.open_database(database_url)
    yield engine
    engine.dispose()


def test_replay_inserts_nothing_twice(engine) -> None:  # type: ignore[no-untyped-def]
    inserted = storage.write_batch(engine, [result(1), result(2)], sink_ts=5)
    assert inserted == 2
    inserted = storage.write_batch(engine, [result(2), result(3)], sink_ts=6)
    assert inserted == 1
    inserted = storage.write_batch(engine, [result(3, version="v2")], sink_ts=7)
    assert inserted == 1, "another model version of the same frame is a new row"
    assert count_detections(engine) == 4


def test_rows_keep_every_hop(engine) -> None:  # type: ignore[no-untyped-def]
    storage.write_batch(engine, [result(1, "crack")], sink_ts=42)
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
