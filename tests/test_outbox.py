"""The outbox on SQLite and PostgreSQL: each notifier from its own cursor, a failing one
given the same entry again next round, pruning only what every notifier took."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.pipeline.outputs.outbox import Outbox
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import outbox as store
from linewatch.pipeline.storage.outbox import ALERT, VERDICT
from linewatch.schemas.messages import AlertMessage, PartVerdict
from linewatch.schemas.tables import OutboxCursor, OutboxEntry


class Recording:
    """A notifier that keeps what it was given; `fail_on` part ids raise once each."""

    def __init__(self, name: str, fail_on: tuple[int, ...] = ()) -> None:
        self.name = name
        self.fail_on = set(fail_on)
        self.given: list[tuple[str, int]] = []

    def verdict(self, verdict: PartVerdict) -> None:
        if verdict.part_id in self.fail_on:
            self.fail_on.discard(verdict.part_id)
            raise ConnectionError("Redis is down")
        self.given.append(("verdict", verdict.part_id))

    def notify(self, alert: AlertMessage) -> None:
        self.given.append(("alert", alert.part_id or 0))


def add_part(engine, part_id: int, ng: bool = False) -> None:  # type: ignore[no-untyped-def]
    verdict = PartVerdict(
        "cam", part_id, "defect" if ng else "ok", "crack", 0.9, "v1", 1, 2, 3, 4, 2, 2
    )
    alert = AlertMessage(part_id, "cam", "crack", "raised", 1, 1, 2, 2, 0.9, 2, "part", part_id)
    with Session(engine) as session, session.begin():
        store.add(session, VERDICT, verdict.to_json(), 1)
        if ng:
            store.add(session, ALERT, alert.to_json(), 1)


def cursor_rows(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return dict(session.execute(select(OutboxCursor.notifier, OutboxCursor.last_id)).all())  # type: ignore[arg-type]


def test_a_failing_notifier_gets_the_entry_again_and_the_others_go_on(database_url) -> None:  # type: ignore[no-untyped-def]
    engine = storage.open_database(database_url)
    steady, flaky = Recording("steady"), Recording("flaky", fail_on=(2,))
    outbox = Outbox(engine=engine, notifiers=[steady, flaky])
    outbox.open()
    add_part(engine, 1)
    add_part(engine, 2, ng=True)
    add_part(engine, 3)
    assert outbox.deliver() == 4 + 1  # steady took all four entries, flaky only the first
    assert steady.given == [("verdict", 1), ("verdict", 2), ("alert", 2), ("verdict", 3)]
    assert flaky.given == [("verdict", 1)]
    first = cursor_rows(engine)
    assert first["flaky"] < first["steady"]
    assert outbox.deliver() == 3  # flaky from where it failed; steady has nothing new
    assert flaky.given == steady.given
    assert cursor_rows(engine)["flaky"] == cursor_rows(engine)["steady"]
    with Session(engine) as session:  # all taken: only the newest entry stays (ids go on)
        assert session.scalar(select(func.count()).select_from(OutboxEntry)) == 1
    restarted = Recording("flaky")
    again = Outbox(engine=engine, notifiers=[steady, restarted])
    again.open()
    assert again.deliver() == 0 and restarted.given == []  # a restart repeats nothing taken
    engine.dispose()
