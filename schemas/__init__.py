"""Formats: wire messages (versioned, no pickle), tables (SQLAlchemy), decision values."""
