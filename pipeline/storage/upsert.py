"""The dialect's INSERT (SQLite or PostgreSQL), for ON CONFLICT DO NOTHING."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(engine: Engine, table: Any) -> Any:
    """`insert(table)` of the engine's dialect (it has on_conflict_do_nothing)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
