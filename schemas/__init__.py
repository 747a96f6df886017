"""Wire and table formats: messages (versioned dataclasses, no pickle), tables (SQLAlchemy)."""
