"""Redis through Sentinel: one-line errors for what is misconfigured, a client that follows
a promotion, and `linewatch status` naming the primary and the last failover.

Real processes on free loopback ports (tests/support/sentinel.py); the whole line riding
through a failover is in test_sentinel_line.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from linewatch.pipeline import metrics
from linewatch.pipeline.config import load_settings
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.streams import broker, pubsub
from linewatch.pipeline.streams.embedded_redis import free_port
from tests.support.sentinel import PASSWORD, SENTINEL_PASSWORD, SentinelSet, sentinel_set
from tests.support.services import assert_clean_error, linewatch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with sentinel_set(tmp_path_factory.mktemp("sentinels")) as cluster:
        yield cluster


def status_with(tmp_path: Path, redis: dict[str, object]):  # type: ignore[no-untyped-def]
    config = tmp_path / "line.yaml"
    config.write_text(yaml.safe_dump({"line": "sent", "data_dir": str(tmp_path), "redis": redis}))
    return linewatch("status", "--config", str(config), timeout=60)


def test_an_unknown_service_is_named(sentinels: SentinelSet, tmp_path: Path) -> None:
    run = status_with(tmp_path, sentinels.settings(service="nosuch"))
    assert_clean_error(run, "know no service 'nosuch'", "linewatch", "redis.service")


def test_all_sentinels_down_names_them(tmp_path: Path) -> None:
    down = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    run = status_with(tmp_path, {"sentinels": down, "password": PASSWORD})
    assert_clean_error(run, "no Redis Sentinel answers", *down, "redis.sentinels")


def test_a_wrong_sentinel_password_is_named_and_not_shown(
    sentinels: SentinelSet, tmp_path: Path
) -> None:
    run = status_with(tmp_path, sentinels.settings(sentinel_password="wrong-pw-9d"))
    assert_clean_error(run, "refused the password", "redis.sentinel_password")
    assert "wrong-pw-9d" not in run.stderr + run.stdout


def test_a_wrong_data_password_is_named(sentinels: SentinelSet, tmp_path: Path) -> None:
    run = status_with(tmp_path, sentinels.settings(password="wrong-pw-4e"))
    assert_clean_error(run, "refused the password", "redis.password")
    assert "wrong-pw-4e" not in run.stderr + run.stdout


def test_redis_url_and_sentinels_together_name_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="redis_url.*redis.sentinels"):
        load_settings(
            environ={},
            overrides={"redis_url": "redis://x", "redis": {"sentinels": ["h:26379"]}},
        )
    with pytest.raises(ConfigError, match="redis.sentinels.*host:port"):
        load_settings(environ={}, overrides={"redis": {"sentinels": ["h26379"]}})


def test_the_secrets_reach_a_pickled_settings_intact(sentinels: SentinelSet) -> None:
    import pickle

    settings = load_settings(environ={}, overrides={"redis": sentinels.settings()})
    assert "sentinel-pw" not in settings.model_dump_json()
    copy = pickle.loads(pickle.dumps(settings))  # how Role hands settings to a worker
    assert copy.redis.sentinel_password.get_secret_value() == SENTINEL_PASSWORD
    client = broker.connect_to(copy, "test")
    assert client.ping()
    client.close()


def test_a_client_follows_a_failover_and_status_shows_it(tmp_path: Path) -> None:
    with sentinel_set(tmp_path / "set") as cluster:
        settings = load_settings(
            environ={}, overrides={"redis": cluster.settings(), "data_dir": str(tmp_path)}
        )
        client = broker.connect_to(settings, "test")
        stream = "lw:test:sentinel"
        broker.add_to_streams(client, [(stream, [{b"n": b"1"}], None)], settings.redis)
        seen = metrics.REDIS_FAILOVERS._value.get()
        old = cluster.kill_primary()
        killed_at = time.monotonic()
        entries = broker.with_retry(
            lambda: broker.add_to_streams(client, [(stream, [{b"n": b"2"}], None)], settings.redis),
            lambda delay: time.sleep(delay) or False,
            "test",
        )
        resumed_s = time.monotonic() - killed_at
        assert len(entries) == 1 and resumed_s < 10, resumed_s
        assert client.xlen(stream) == 2, "the replicated entry survived the kill"
        assert metrics.REDIS_FAILOVERS._value.get() == seen + 1
        assert_batches_do_not_wait_out_a_missing_replica(client, settings, stream)
        new = cluster.primary_port()
        run = status_with(tmp_path, cluster.settings())
        assert run.returncode == 0, run.stderr
        assert f"127.0.0.1:{new}" in run.stdout and f"127.0.0.1:{old} -> " in run.stdout
        cluster.restart_as_replica(old)
        state = broker._replica_wait(client)
        deadline = time.monotonic() + broker.ReplicaWait.PROBE_S + 10
        while state.probe_until and time.monotonic() < deadline:
            broker.add_to_streams(client, [(stream, [{b"n": b"4"}], None)], settings.redis)
            time.sleep(0.1)
        assert state.probe_until == 0, "a replica back: WAIT confirms again"
        client.close()


def test_batches_no_replica_confirmed_are_sent_again_when_the_primary_changes(
    tmp_path: Path,
) -> None:
    """The replica is gone, so WAIT comes short and the batches live only on the primary;
    the primary then dies and comes back empty (no persistence). The batches kept since
    are sent again to it with the next one: none is lost."""
    with sentinel_set(tmp_path / "set") as cluster:
        settings = load_settings(environ={}, overrides={"redis": cluster.settings()})
        replicas = settings.redis.model_copy(update={"wait_timeout_ms": 50})
        client = broker.connect_to(settings, "test")
        primary, replica = (node.port for node in cluster.servers)
        cluster.kill(replica)
        stream = "lw:test:unconfirmed"

        def add(n: int) -> None:
            broker.with_retry(
                lambda: broker.add_to_streams(
                    client, [(stream, [{b"n": b"%d" % n}], None)], replicas
                ),
                lambda delay: time.sleep(delay) or False,
                "test",
            )

        for n in range(3):
            add(n)
        state = broker._replica_wait(client)
        assert len(state.unconfirmed) == 3, "kept until a replica confirms"
        cluster.kill(primary)
        cluster.restart(primary)
        add(3)
        stored = sorted(int(fields[b"n"]) for _, fields in client.xrange(stream))
        assert stored == [0, 1, 2, 3], stored
        assert len(state.unconfirmed) == 4, "still no replica: all four are kept"
        client.close()


def test_kept_batches_are_bounded_oldest_first() -> None:
    state = broker.ReplicaWait()
    state.MAX_UNCONFIRMED_BYTES = 25  # each entry below is 11 bytes
    for n in range(4):
        state.written([("s", [{b"n": b"%09d" % n}], None)], "server-a", count=0, wanted=1)
    assert [batch[1][0][b"n"] for batch, _ in state.unconfirmed] == [b"000000002", b"000000003"]
    lost = state.written([("s", [{b"n": b"x"}], None)], "server-b", count=1, wanted=1)
    assert len(lost) == 2 and not state.unconfirmed, "handed back once, then forgotten"


def assert_batches_do_not_wait_out_a_missing_replica(client, settings, stream: str) -> None:  # type: ignore[no-untyped-def]
    """The old primary is gone: no replica can confirm. Batches go on without paying
    `wait_timeout_ms` (500 ms) each, counted as short WAITs."""
    short = metrics.REDIS_WAIT_SHORT._value.get()
    start = time.monotonic()
    for _ in range(20):
        broker.add_to_streams(client, [(stream, [{b"n": b"3"}], None)], settings.redis)
    assert time.monotonic() - start < 3.0, "20 batches, not 20 x 500 ms"
    assert metrics.REDIS_WAIT_SHORT._value.get() >= short + 20


def test_the_api_event_stream_listens_on_the_primary(sentinels: SentinelSet) -> None:
    settings = load_settings(environ={}, overrides={"redis": sentinels.settings()})
    client = broker.connect_to(settings, "test")

    async def first_message() -> tuple[str, str] | None:
        listening = pubsub.listen(settings.redis, ["lw:test:events"], idle_s=5)  # type: ignore[arg-type]
        assert await anext(listening) is None  # subscribed
        client.publish("lw:test:events", "hello")
        message = await anext(listening)
        await listening.aclose()
        return message

    assert asyncio.run(first_message()) == ("lw:test:events", "hello")
    client.close()
