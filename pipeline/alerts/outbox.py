"""Delivery through the outbox: what a decision announces is written in the decision's
own transaction, then given to each notifier in order, after the commit.

Each notifier has a cursor (by its name) that moves past an entry once the notifier was
given it, so a sink killed after a commit still announces that decision when it comes
back, and never announces a decision twice unless it was killed between giving an entry
to a notifier and moving that notifier's cursor (then that one entry, to that notifier,
once more; consumers that must not see it twice key on camera_id + part_id or alert id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from sqlalchemy import Engine

from linewatch.pipeline.alerts.notifiers import Notifier
from linewatch.pipeline.storage import outbox as store
from linewatch.schemas.messages import AlertMessage, PartVerdict

log = logging.getLogger(__name__)

VERDICT, ALERT = "verdict", "alert"


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
        self.batch = batch
        self._cursors: dict[str, int] | None = None

    def open(self) -> None:
        """Read (or start) the notifiers' cursors: call at start-up, before any decision
        of this run is written, so a notifier seen for the first time gets those."""
        self._cursors = store.cursors(self.engine, [name for name, _ in self.notifiers])

    def deliver(self) -> int:
        """Give every notifier the entries after its cursor; returns how many were given
        (database errors propagate: the caller retries)."""
        if self._cursors is None:
            self.open()
        assert self._cursors is not None
        given = 0
        for name, notifier in self.notifiers:
            for entry_id, kind, payload in store.after(
                self.engine, self._cursors[name], self.batch
            ):
                _give(notifier, name, kind, payload)
                store.advance(self.engine, name, entry_id)
                self._cursors[name] = entry_id
                given += 1
        if given and self._cursors:
            store.prune(self.engine, min(self._cursors.values()))
        return given


def _give(notifier: Notifier, name: str, kind: str, payload: str) -> None:
    data = json.loads(payload)
    try:
        if kind == VERDICT:
            notifier.verdict(PartVerdict(**data))
        else:
            notifier.notify(AlertMessage(**data))
    except Exception:  # one failing notifier must not stop the others or the sink
        log.exception("notifier %s failed for %s %s", name, kind, payload[:200])
