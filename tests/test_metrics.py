"""/metrics and /healthz served by a worker process's metrics server."""

import urllib.error
import urllib.request

import pytest

from linewatch.pipeline import metrics
from linewatch.pipeline.streams.embedded_redis import free_port
from tests.support.services import add_entries


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_and_health_endpoints() -> None:
    port = free_port()
    server = metrics.serve(port)
    try:
        metrics.FRAMES.labels("infer", "ok").inc(7)
        metrics.CAPTURE_TO_RESULT.observe(0.12)
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert 'linewatch_frames_total{outcome="ok",stage="infer"}' in body
        assert "linewatch_capture_to_result_seconds_bucket" in body
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        metrics.LAST_LOOP.set(0)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 503
        assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
    finally:
        server.shutdown()
        metrics.mark_alive()


@pytest.mark.parametrize("value", [-1, 70000])
def test_metrics_port_is_validated(value: int) -> None:
    from linewatch.pipeline.config import load_settings
    from linewatch.pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics_port"):
        load_settings(environ={}, overrides={"metrics_port": value})


def test_backlog_pending_and_dead_letter_metrics(redis_client, line_name) -> None:  # type: ignore[no-untyped-def]
    from linewatch.pipeline.streams import broker
    from linewatch.pipeline.streams.consumer import ConsumerLoop, decode_entries
    from linewatch.schemas.messages import FrameMessage

    stream, dead = f"lw:frames:{line_name}", f"lw:dead:{line_name}"
    broker.ensure_group(redis_client, stream, "infer")
    add_entries(redis_client, stream, [{b"v": b"1"}, {b"v": b"1"}, {b"v": b"1"}])
    entries = broker.read_group(redis_client, stream, "infer", "w1", 2, None)
    loop = ConsumerLoop(
        client=redis_client,
        stream=stream,
        group="infer",
        consumer="w1",
        count=8,
        read_new=list,
        handle=bool,
        heartbeat_key=f"lw:worker:{line_name}:w1",
        status=dict,
    )
    loop._beat()  # noqa: SLF001
    assert metrics.BACKLOG.labels(stream)._value.get() == 3  # noqa: SLF001
    assert metrics.PENDING.labels(stream, "infer")._value.get() == 2  # noqa: SLF001

    with broker.transaction(redis_client) as pipe:
        assert decode_entries(entries, FrameMessage.decode, pipe, stream, dead) == []
        pipe.execute()
    assert metrics.DEAD_LETTERS.labels(stream)._value.get() == 2  # noqa: SLF001
    assert redis_client.xlen(dead) == 2
    redis_client.delete(stream, dead, f"lw:worker:{line_name}:w1")
