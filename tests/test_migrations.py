"""Alembic migrations on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import migrate
from linewatch.schemas.tables import Base
from tests.support.services import linewatch


@pytest.fixture()
def url(database_url: str) -> str:
    return database_url


def test_migrations_match_the_table_models(url: str) -> None:
    engine = storage.open_database(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
    assert migrate.current_revision(storage.create_database_engine(url)) == migrate.head_revision()


def test_outdated_schema_is_refused_until_upgraded(url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = storage.open_database(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    with pytest.raises(migrate.SchemaOutOfDate, match="linewatch db upgrade"):
        storage.open_database(url)

    env = {"LINEWATCH_DATABASE_URL": url}
    current = linewatch("db", "current", env=env)
    assert "schema 0000" in current.stdout
    with storage.create_database_engine(url).begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
    refused = linewatch("run", env={**env, "LINEWATCH_CAMERAS": "[{id: c, url: /x.mp4}]"})
    assert refused.returncode == 2 and "linewatch db upgrade" in refused.stderr


def test_db_upgrade_creates_the_schema(url: str) -> None:
    env = {"LINEWATCH_DATABASE_URL": url}
    upgraded = linewatch("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema empty -> {migrate.head_revision()}" in upgraded.stdout
    assert migrate.current_revision(storage.create_database_engine(url)) == migrate.head_revision()
