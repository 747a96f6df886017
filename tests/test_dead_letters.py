"""`linewatch dlq` against a real Redis."""

from linewatch.pipeline.streams import broker
from tests.support.services import linewatch


def test_list_replay_and_purge(redis_client, redis_url, line_name) -> None:  # type: ignore[no-untyped-def]
    dead, source = f"lw:dead:{line_name}", f"lw:frames:{line_name}"
    pipe = broker.transaction(redis_client)
    broker.dead_letter(
        pipe, dead, source, b"1-1", "missing field 'seq'", {b"v": b"1", b"x": b"\x00"}
    )
    broker.dead_letter(pipe, dead, source, b"1-2", "schema version 9", {b"v": b"9"})
    pipe.execute()
    env = {"LINEWATCH_REDIS_URL": redis_url, "LINEWATCH_LINE": line_name}

    listing = linewatch("dlq", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "missing field 'seq'" in listing.stdout and "2 entries" in listing.stdout

    first_id = redis_client.xrange(dead)[0][0].decode()
    replay = linewatch("dlq", "replay", first_id, env=env)
    assert "replayed 1" in replay.stdout
    assert [fields for _, fields in redis_client.xrange(source)] == [{b"v": b"1", b"x": b"\x00"}]

    purge = linewatch("dlq", "purge", env=env)
    assert "purged 1" in purge.stdout and redis_client.xlen(dead) == 0
