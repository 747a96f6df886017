"""`linewatch status` reads a running line's state from Redis and the database; per
camera its parts per minute, NG rate and last NG part, counted as the line saw them."""

import re
from datetime import datetime, timedelta, timezone

import yaml
from sqlalchemy.orm import Session

from linewatch.pipeline.decide.ng_rule import ng_sql
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import part_activity
from linewatch.pipeline.streams import broker
from linewatch.schemas.tables import Alert
from tests.support.rows import part_row, write_parts
from tests.support.services import add_entries, linewatch


def recent_parts(now: datetime) -> list[dict[str, object]]:
    """press-1 in the last minute: 10 parts, 2 defect, 1 uninspected, 1 defect decided
    late (the line got uninspected); older parts that do not count; press-2 all OK."""
    at = [now - timedelta(seconds=50 - 4 * i) for i in range(10)]
    rows = [part_row("press-1", i + 1, at[i], "ok", "free") for i in range(10)]
    rows[2] = part_row("press-1", 3, at[2], "defect", "crack")
    rows[5] = part_row("press-1", 6, at[5], "defect", "break")
    rows[7] = part_row("press-1", 8, at[7], "uninspected", "uninspected")
    rows[8] = part_row("press-1", 9, at[8], "defect", "crack", late=True)
    old = now - timedelta(minutes=5)
    rows += [part_row("press-1", 100 + i, old, "defect", "crack") for i in range(5)]
    rows += [part_row("press-2", i + 1, at[i], "ok", "free") for i in range(6)]
    return rows


def test_parts_per_minute_ng_rate_and_last_ng_part(database_url) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    engine = storage.open_database(database_url)
    write_parts(engine, recent_parts(now))
    reject = part_activity.recent(engine, ng_sql(reject_uninspected=True), now=now)
    assert reject["press-1"] == part_activity.Activity(parts=10, ng=4)
    assert reject["press-1"].ng_rate == 0.4
    assert reject["press-2"] == part_activity.Activity(parts=6, ng=0)
    accept = part_activity.recent(engine, ng_sql(reject_uninspected=False), now=now)
    assert accept["press-1"].ng == 2  # uninspected and late parts pass the gate
    last = part_activity.last_ng(engine, ["press-1", "press-2", "press-9"], ng_sql(True))
    assert (last["press-1"].part_id, last["press-1"].label) == (9, "uninspected")
    assert last["press-1"].captured_at.timestamp() == (now - timedelta(seconds=18)).timestamp()
    assert set(last) == {"press-1"}
    accepted = part_activity.last_ng(engine, ["press-1"], ng_sql(False))["press-1"]
    assert (accepted.part_id, accepted.label) == (6, "break")
    engine.dispose()


def test_status_shows_cameras_workers_streams_and_alerts(
    tmp_path, redis_client, redis_url, line_name, sqlite_url
) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "line.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "line": line_name,
                "redis_url": redis_url,
                "database_url": sqlite_url,
                "cameras": [
                    {"id": "press-1", "url": "rtsp://cam/1"},
                    {"id": "press-2", "url": "rtsp://cam/2"},
                ],
            }
        )
    )
    redis_client.hset(
        f"lw:ingest:{line_name}:press-1",
        mapping={"decoded": 41, "sent": 40, "dropped": 1, "done": 0},
    )
    broker.heartbeat(
        redis_client,
        f"lw:worker:{line_name}:infer-x-0",
        15,
        {"role": "infer", "pid": 4242, "seen": 0, "inferred": 39},
    )
    add_entries(redis_client, f"lw:frames:{line_name}", [{b"v": b"1"}] * 3)
    engine = storage.open_database(sqlite_url)
    with Session(engine) as session, session.begin():  # an open alert as stored
        session.add(
            Alert(
                camera_id="press-1",
                label="crack",
                state="open",
                opened_seq=12,
                opened_ts=0,
                raised_ts=1,
                peak_score=0.97,
                frames=3,
            )
        )
    write_parts(engine, recent_parts(datetime.now(timezone.utc)))
    engine.dispose()

    run = linewatch("status", "--config", str(config))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for expected in ("press-1", "41", "infer-x-0", "4242", "frames backlog", "crack", "0.97"):
        assert expected in out, expected
    assert re.search(r"frames backlog\s*│\s*3\s", out), out
    # press-1: 10 parts in the last minute, 4 NG, the last NG part 9 (late: uninspected)
    assert re.search(r"press-1\s*│\s*10\.0\s*│\s*40\.0%\s*│\s*9\s*│\s*uninspected", out), out
    assert re.search(r"press-2\s*│\s*6\.0\s*│\s*0\.0%\s*│\s*-\s", out), out
