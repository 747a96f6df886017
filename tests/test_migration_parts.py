"""Migration 0007 on a database in use (SQLite and PostgreSQL): frame alerts keep their
key and become kind `frame`; part alerts are unique per part; downgrade restores 0006."""

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import migrate

ALERT = (
    "INSERT INTO alerts (camera_id, label, state, opened_seq, opened_ts, raised_ts, "
    "peak_score, frames) VALUES ('cam', 'crack', 'open', 4, 4, 5, 0.9, 3)"
)


def test_0007_upgrades_a_database_with_alerts_and_downgrades(database_url: str) -> None:
    engine = storage.create_database_engine(database_url)
    with engine.begin() as connection:
        command.upgrade(migrate._config(connection), "0006")  # noqa: SLF001
        connection.execute(text(ALERT))
    migrate.upgrade(engine)
    with engine.connect() as connection:
        row = connection.execute(text("SELECT kind, part_id FROM alerts")).one()
    assert tuple(row) == ("frame", None)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(ALERT))  # the frame alert's key still holds
    part = (
        "INSERT INTO alerts (camera_id, label, state, opened_seq, opened_ts, raised_ts, "
        "peak_score, frames, kind, part_id) VALUES ('cam', 'crack', 'raised', 4, 4, 5, 0.9, "
        "1, 'part', {part})"
    )
    with engine.begin() as connection:  # same camera, label and seq: another part is fine
        connection.execute(text(part.format(part=1)))
        connection.execute(text(part.format(part=2)))
    with engine.begin() as connection:
        command.downgrade(migrate._config(connection), "0006")  # noqa: SLF001
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM alerts")).scalar() == 1
    engine.dispose()
