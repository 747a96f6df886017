"""The NG rule, written once: whether the line rejected a part, in Python and in SQL.

A part is NG as the line saw it: `defect` decided before its deadline, or uninspected
(no inferred view, or decided late: the line got `uninspected` at the deadline) when
`verdict.on_uninspected` is `reject`. The SQL form below mirrors `is_ng` over the `parts`
table for the queries that count NG parts (tests/test_ng_rule.py checks they agree on
SQLite and PostgreSQL); storage's queries take it as an argument, since storage sits
below this room.
"""

from __future__ import annotations

from sqlalchemy import and_, or_
from sqlalchemy.sql import ColumnElement

from linewatch.schemas.decisions import UNINSPECTED_LABEL
from linewatch.schemas.tables import Part

DEFECT = "defect"


def sent_uninspected(verdict: str, late: bool) -> bool:
    """The line got `uninspected`: no inferred view, or the verdict came after the deadline."""
    return late or verdict == UNINSPECTED_LABEL


def is_ng(verdict: str, late: bool, reject_uninspected: bool) -> bool:
    """Whether the line rejected a part with this verdict, decided late or not."""
    if sent_uninspected(verdict, late):
        return reject_uninspected
    return verdict == DEFECT


def ng_sql(reject_uninspected: bool) -> ColumnElement[bool]:
    """`is_ng` over the `parts` table's `verdict` and `late` columns."""
    uninspected = or_(Part.late.is_(True), Part.verdict == UNINSPECTED_LABEL)
    defect_in_time = and_(Part.late.is_(False), Part.verdict == DEFECT)
    return or_(uninspected, defect_in_time) if reject_uninspected else defect_in_time
