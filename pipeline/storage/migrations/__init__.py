"""Alembic migrations of the linewatch schema (SQLite and PostgreSQL)."""
