"""Delivery through the outbox: what a decision announces is written in the decision's
own transaction, then given to each notifier in order, after the commit.

Each notifier has a cursor (by its name): the last entry it has surely taken. A sink
killed after a commit announces that decision when it comes back, from each cursor on.

- A notifier that is given entries synchronously (log, pub/sub, webhook) moves its
  cursor after each round it took. A kill within a round gives that round again:
  pub/sub and the webhook queue skip what they already took (one marker per part
  verdict / alert state in Redis, set with the delivery), the log repeats those lines.
  A notifier that fails keeps its cursor before the failing entry and is given it
  again next round (e.g. Redis down), so nothing is skipped.
- An acknowledging notifier (MQTT) is given each entry with its id as a token and
  says how far the broker confirmed (`confirmed_through`); its cursor moves only that
  far, stored from the notifier's thread at each acknowledgement, so a killed sink's
  restart gives again only what the broker had not confirmed. It is given no more than
  it has room for: the rest waits here, not in a queue that drops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import partial

from sqlalchemy import Engine

from linewatch.pipeline.outputs.notifiers import AckNotifier, Notifier
from linewatch.pipeline.storage import outbox as store
from linewatch.pipeline.storage.database import DatabaseError
from linewatch.schemas.messages import AlertMessage, PartVerdict

log = logging.getLogger(__name__)


def notifier_name(notifier: Notifier, taken: Sequence[str] = ()) -> str:
    """A notifier's cursor name: its `name` attribute, else its class name (made unique)."""
    base = str(getattr(notifier, "name", type(notifier).__name__))[:60]
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    return name


class Outbox:
    def __init__(self, *, engine: Engine, notifiers: Sequence[Notifier], batch: int = 500) -> None:
        self.engine = engine
        self.notifiers: list[tuple[str, Notifier]] = []
        for notifier in notifiers:
            name = notifier_name(notifier, [n for n, _ in self.notifiers])
            self.notifiers.append((name, notifier))
            if isinstance(notifier, AckNotifier):
                notifier.on_confirmed(partial(self._store_confirmed, name))
        self.batch = batch
        self._cursors: dict[str, int] = {}  # stored: surely taken
        self._given: dict[str, int] = {}  # handed over in this process (>= the cursor)
        self._failing: dict[str, int] = {}  # the entry a notifier last failed on (logged once)

    def open(self) -> None:
        """Read (or start) the notifiers' cursors: call at start-up, before any decision
        of this run is written, so a notifier seen for the first time gets those."""
        self._cursors = store.cursors(self.engine, [name for name, _ in self.notifiers])
        self._given = dict(self._cursors)

    def deliver(self) -> int:
        """Give every notifier the entries after what it was given, move the cursors as
        far as each notifier surely took; returns how many entries were handed over
        (database errors propagate: the caller retries)."""
        if not self._cursors and self.notifiers:
            self.open()
        given = 0
        for name, notifier in self.notifiers:
            if isinstance(notifier, AckNotifier):
                given += self._give_acknowledged(name, notifier)
            else:
                given += self._give_synchronous(name, notifier)
        if self._cursors:
            store.prune(self.engine, min(self._cursors.values()))
        return given

    def _give_synchronous(self, name: str, notifier: Notifier) -> int:
        given = 0
        for entry_id, kind, payload in store.after(self.engine, self._given[name], self.batch):
            if not self._give(name, notifier, entry_id, kind, payload, token=False):
                break  # this entry and the rest wait for the next round
            self._given[name] = entry_id
            given += 1
        self._move_cursor(name, self._given[name])
        return given

    def _give_acknowledged(self, name: str, notifier: AckNotifier) -> int:
        room = min(self.batch, notifier.room())
        entries = store.after(self.engine, self._given[name], room) if room > 0 else []
        for entry_id, kind, payload in entries:
            self._give(name, notifier, entry_id, kind, payload, token=True)
            self._given[name] = entry_id  # the notifier holds it now, failed or not
        self._settle(name, notifier)
        return len(entries)

    def settle(self) -> None:
        """Move the acknowledging notifiers' cursors as far as they confirmed (at exit)."""
        for name, notifier in self.notifiers:
            if isinstance(notifier, AckNotifier) and name in self._cursors:
                self._settle(name, notifier)

    def _settle(self, name: str, notifier: AckNotifier) -> None:
        confirmed = notifier.confirmed_through()
        if confirmed is not None:
            self._move_cursor(name, min(confirmed, self._given[name]))

    def _store_confirmed(self, name: str, entry_id: int) -> None:
        """From the notifier's thread, at each acknowledgement: the cursor is stored at
        once, so a sink killed now gives again only what the broker has not confirmed.
        The sink's own round stores it too (here a database error is only logged)."""
        try:
            store.advance(self.engine, name, entry_id)
        except DatabaseError as exc:
            log.warning(
                "outbox cursor %s not stored (%s); next round", name, exc.__class__.__name__
            )

    def _move_cursor(self, name: str, entry_id: int) -> None:
        if entry_id > self._cursors[name]:
            store.advance(self.engine, name, entry_id)
            self._cursors[name] = entry_id

    def _give(
        self, name: str, notifier: Notifier, entry_id: int, kind: str, payload: str, token: bool
    ) -> bool:
        """Hand one entry over; False (logged once per entry) when the notifier failed."""
        message = PartVerdict(**json.loads(payload)) if kind == store.VERDICT else None
        alert = None if message else AlertMessage(**json.loads(payload))
        extra = {"token": entry_id} if token else {}
        try:
            if message is not None:
                notifier.verdict(message, **extra)  # type: ignore[call-arg]
            else:
                notifier.notify(alert, **extra)  # type: ignore[arg-type, call-arg]
        except Exception:  # one failing notifier must not stop the others or the sink
            if self._failing.get(name) != entry_id:
                self._failing[name] = entry_id
                log.exception(
                    "notifier %s failed for outbox entry %d (%s %s); it is given again next round",
                    name,
                    entry_id,
                    kind,
                    payload[:200],
                )
            return False
        self._failing.pop(name, None)
        return True
