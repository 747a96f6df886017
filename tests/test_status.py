"""`linewatch status` reads a running line's state from Redis and the database."""

import re

import yaml

from linewatch.pipeline.alerts.rule import DefectEvent
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from tests.helpers import linewatch


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
                "cameras": [{"id": "press-1", "url": "rtsp://cam/1"}],
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
    broker.add_entries(redis_client, f"lw:frames:{line_name}", [{b"v": b"1"}] * 3)
    engine = storage.open_database(sqlite_url)
    event = DefectEvent("press-1", "crack", "open", 12, 0, peak_score=0.97, frames=3)
    storage.write_batch(engine, [], [(event, b"")], sink_ts=1)
    engine.dispose()

    run = linewatch("status", "--config", str(config))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for expected in ("press-1", "41", "infer-x-0", "4242", "frames backlog", "crack", "0.97"):
        assert expected in out, expected
    assert re.search(r"frames backlog\s*│\s*3\s", out), out
