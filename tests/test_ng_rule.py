"""The NG rule's Python form and its SQL mirror agree on every verdict, label, lateness and
`on_uninspected` setting, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools

from sqlalchemy import select

from linewatch.pipeline.config import VerdictSettings
from linewatch.pipeline.decide.ng_rule import is_ng, ng_sql
from linewatch.pipeline.storage import database as storage
from linewatch.schemas.tables import Part
from tests.support.api import insert_part

VERDICTS = ("ok", "defect", "uninspected")
LABELS = ("free", "crack", "uninspected", "defect")


def test_python_and_sql_agree_on_every_combination(database_url: str) -> None:
    engine = storage.open_database(database_url)
    combinations = list(itertools.product(VERDICTS, LABELS, (False, True)))
    for part_id, (verdict, label, late) in enumerate(combinations):
        insert_part(engine, part_id=part_id, verdict=verdict, label=label, late=late)
    for reject in (True, False):
        query = select(Part.part_id, ng_sql(reject)).order_by(Part.part_id)
        with engine.connect() as connection:
            in_sql = {int(p): bool(ng) for p, ng in connection.execute(query)}
        in_python = {
            part_id: is_ng(verdict, late, reject)
            for part_id, (verdict, _, late) in enumerate(combinations)
        }
        assert in_sql == in_python, f"reject_uninspected={reject}"
    engine.dispose()


def test_the_rule_as_the_line_sees_it() -> None:
    assert is_ng("defect", False, False) and not is_ng("ok", False, True)
    assert is_ng("uninspected", False, True) and not is_ng("uninspected", False, False)
    assert is_ng("ok", True, True) and not is_ng("defect", True, False)  # late: uninspected


def test_on_uninspected_is_read_in_one_place() -> None:
    assert VerdictSettings().rejects_uninspected
    assert not VerdictSettings(on_uninspected="accept").rejects_uninspected
