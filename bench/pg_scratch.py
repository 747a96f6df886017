"""What the PostgreSQL report benches share: a scratch schema filled server-side, rolled
up like `linewatch db prune`, timed best-of-N."""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import reporting

ROOT = Path(__file__).resolve().parent.parent
DAYS = 30
CAMERAS = 10
CHUNK = 1_000_000
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args()


@contextmanager
def scratch_schema(url: str, prefix: str) -> Iterator[tuple[Engine, str]]:
    """A migrated private schema (dropped on exit) and the server's version string."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        server = connection.execute(text("SHOW server_version")).scalar()
    engine = storage.open_database(f"{url}?options=-csearch_path%3D{schema}")
    print(f"scratch schema {schema}", flush=True)
    try:
        yield engine, f"PostgreSQL {server}"
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def report_windows(now: datetime) -> dict[str, reporting.Window]:
    return {
        "24h": reporting.Window(now - timedelta(hours=24), now),
        "30d": reporting.Window(now - timedelta(days=DAYS, hours=1), now),
    }


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def fill(engine: Engine, *, sql: str, rows: int, now: datetime) -> float:
    """Run the INSERT ... SELECT generate_series `sql` over `rows` in chunks; seconds."""
    start, began = now - timedelta(days=DAYS), time.perf_counter()
    step = timedelta(days=DAYS) / rows
    for lo in range(0, rows, CHUNK):
        hi = min(lo + CHUNK, rows) - 1
        values = {"cameras": CAMERAS, "start": start, "step": step, "lo": lo, "hi": hi}
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL synchronous_commit = off"))
            connection.execute(text(sql), values)
        print(f"  {hi + 1:>11,} rows", flush=True)
    vacuum(engine)
    return time.perf_counter() - began


def roll_up(engine: Engine, *, sql: str, table: str, now: datetime) -> float:
    """Roll everything older than a day into the hourly summary and delete it; seconds.

    A one-shot DELETE of 29 days leaves a heap of dead space that plain VACUUM keeps; a
    line pruned daily reuses that space for new rows instead. VACUUM FULL gives the heap
    such a line has (about a day of live rows), so the times after pruning are its times."""
    began, cutoff = time.perf_counter(), now - timedelta(days=1)
    with engine.begin() as connection:
        connection.execute(text(sql), {"cutoff": cutoff})
        connection.execute(text(f"DELETE FROM {table} WHERE captured_at < :c"), {"c": cutoff})
    vacuum(engine, full=table)
    return time.perf_counter() - began


def vacuum(engine: Engine, full: str | None = None) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if full:
            connection.execute(text(f"VACUUM FULL {full}"))
        connection.execute(text("VACUUM ANALYZE"))


def best_of(call: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` runs (the machine is shared) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - began)
    return best, result
