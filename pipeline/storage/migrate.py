"""Schema migrations with Alembic: a fresh database is created at the head revision,
an existing one must be upgraded explicitly (`linewatch db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from linewatch.pipeline.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaOutOfDate(ConfigError):
    """The database was made by another linewatch version."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return str(ScriptDirectory.from_config(_config()).get_current_head())


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the head revision; returns (before, after)."""
    before = current_revision(engine)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "head")
    return before, head_revision()


def ensure_schema(engine: Engine, safe_url: str) -> None:
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"database {safe_url} has schema revision {current or 'none'}, this linewatch needs "
        f"{head}; back it up, then run `linewatch db upgrade`"
    )
