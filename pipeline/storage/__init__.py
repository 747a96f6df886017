"""SQL: the engine and writes, migrations, retention, reporting."""
