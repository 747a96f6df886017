"""The sink against a real Redis and real databases: replays write nothing twice; a run
of NG one-view parts (frame mode) raises one line alarm and clean ones close it."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import ResultMessage
from linewatch.schemas.tables import Alert, Detection, Part
from linewatch.workers import sink
from tests.support.builders import NS, make_settings, part_end, result, view_result
from tests.support.services import add_entries, run_sink_until


def counters_parts(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Part)) or 0)


def test_sink_restart_after_commit_before_ack_writes_nothing_twice(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    url = database_url
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=url,
        verdict={"line_alarm": {"n": 2, "open_rate": 1.0, "close_rate": 0.0, "run": 2}},
    )
    labels = ["free", "crack", "crack", "crack", "free", "free", "free", "free"]
    # frame mode: each frame a one-view part, its views first, then the part ends
    views = [
        view_result(seq, 0, seq, ((label, 0.9),), capture_ts=seq * NS)
        for seq, label in enumerate(labels, start=1)
    ]
    ends = [part_end(seq, 1, seq, seq, reason="frame") for seq in range(1, len(labels) + 1)]
    stream = settings.results_stream
    broker.ensure_group(redis_client, stream, sink.GROUP)
    add_entries(redis_client, stream, [m.encode() for m in views + ends])
    engine = storage.open_database(url)

    # The first sink commits the first half, then dies before XACK.
    delivered = broker.read_group(redis_client, stream, sink.GROUP, "sink-a", 4, None)
    decoded = [ResultMessage.decode(fields) for _, fields in delivered]
    storage.write_batch(engine, decoded, sink_ts=1)

    counters = run_sink_until(
        redis_client,
        engine,
        settings,
        "sink-a",
        lambda: broker.backlog(redis_client, stream) == 0 and counters_parts(engine) == 8,
    )
    assert counters.written == 4 and counters.replayed == 4
    with Session(engine) as session:
        seqs = session.scalars(select(Detection.seq).order_by(Detection.seq)).all()
        alerts = session.execute(
            select(Alert.state, Alert.opened_seq, Alert.closed_seq).where(Alert.kind == "line")
        ).all()
        count = session.scalar(select(func.count()).select_from(Detection))
    assert seqs == list(range(1, 9)) and count == 8
    assert alerts == [("closed", 3, 6)]
    # the line's count holds every row once: the 4 the dead sink committed but never
    # acknowledged (nor counted) are counted with their acknowledgement
    assert int(redis_client.hget(settings.stats_key, "written")) == 8
    engine.dispose()


def test_malformed_result_goes_to_dead_letters(
    tmp_path, redis_client, redis_url, line_name, sqlite_url
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, line_name, redis_url, database_url=sqlite_url)
    stream = settings.results_stream
    broker.ensure_group(redis_client, stream, sink.GROUP)
    good = result(1).encode()
    add_entries(redis_client, stream, [{b"v": b"1", b"garbage": b"\x00"}, good])
    engine = storage.open_database(sqlite_url)
    counters = run_sink_until(
        redis_client, engine, settings, "s", lambda: broker.backlog(redis_client, stream) == 0
    )
    assert counters.written == 1 and counters.dead_letters == 1
    dead = redis_client.xrange(settings.dead_letter_stream)
    assert len(dead) == 1
    assert b"missing field" in dead[0][1][b"reason"]
    assert dead[0][1][b"f:garbage"] == b"\x00"
    engine.dispose()
