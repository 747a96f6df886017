"""SQL of the outbox: entries written with the decision they announce, and a cursor per
notifier that moves past an entry once the notifier was given it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from linewatch.schemas.tables import OutboxCursor, OutboxEntry

VERDICT, ALERT = "verdict", "alert"  # the kinds of entry


def add(session: Session, kind: str, payload: str, now: int) -> None:
    session.add(OutboxEntry(kind=kind, payload=payload, created_ts=now))


def cursors(engine: Engine, names: Sequence[str]) -> dict[str, int]:
    """Each notifier's cursor; a notifier seen for the first time starts at the newest
    entry (it is not given what was announced before it was configured)."""
    with Session(engine) as session, session.begin():
        known = dict(
            session.execute(
                select(OutboxCursor.notifier, OutboxCursor.last_id).where(
                    OutboxCursor.notifier.in_(names)
                )
            ).all()
        )
        newest = int(session.scalar(select(func.max(OutboxEntry.id))) or 0)
        for name in set(names) - set(known):
            session.add(OutboxCursor(notifier=name, last_id=newest))
            known[name] = newest
    return {name: int(last) for name, last in known.items()}


def after(engine: Engine, last_id: int, limit: int) -> list[tuple[int, str, str]]:
    """(id, kind, payload) of the entries after `last_id`, oldest first."""
    with Session(engine) as session:
        rows = session.execute(
            select(OutboxEntry.id, OutboxEntry.kind, OutboxEntry.payload)
            .where(OutboxEntry.id > last_id)
            .order_by(OutboxEntry.id)
            .limit(limit)
        ).all()
    return [(int(i), kind, payload) for i, kind, payload in rows]


def advance(engine: Engine, name: str, last_id: int) -> None:
    """Move a cursor forward to `last_id` (never back: two threads may move it)."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(OutboxCursor)
            .where(OutboxCursor.notifier == name, OutboxCursor.last_id < last_id)
            .values(last_id=last_id)
        )


def prune(engine: Engine, upto: int) -> None:
    """Entries every configured notifier has been given go, except entry `upto` itself:
    SQLite numbers a new row after the largest id left, so ids never run backwards."""
    with Session(engine) as session, session.begin():
        session.execute(delete(OutboxEntry).where(OutboxEntry.id < upto))
