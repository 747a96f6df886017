"""Secrets reach the spawned workers intact, and appear nowhere else.

Through the real spawned path: `linewatch run` over a password-protected private
redis-server, alerts delivered by `linewatch worker rq` to a receiver that checks
X-Linewatch-Signature with the configured secret.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.demo import write_demo_video
from linewatch.pipeline.storage.database import open_database
from linewatch.schemas.tables import Alert, Detection
from tests.support.receivers import hmac_signature, webhook_receiver
from tests.support.services import clean_env, linewatch, private_redis, wait_for

FRAMES = 40
SIGNATURE_HEADER = "X-Linewatch-Signature"


def every_value(client: redis.Redis) -> bytes:
    """Everything stored in Redis (keys and values of every type), as one blob."""
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"hash":
            parts += [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == b"list":
            parts += client.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(client.smembers(key))
        elif kind == b"zset":
            parts += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                parts += [b for kv in fields.items() for b in kv]
    return b"\n".join(parts)


@pytest.mark.slow
def test_line_signs_webhooks_with_the_configured_secret_over_a_password_redis(
    tmp_path: Path, line_name: str
) -> None:
    secret = f"hook-{uuid.uuid4().hex}"
    password = f"pw{uuid.uuid4().hex}"
    video = tmp_path / "line.mp4"
    write_demo_video(video, FRAMES, fps=10)
    database = tmp_path / "line.db"
    with private_redis(tmp_path / "redis", password) as redis_url, webhook_receiver() as hook:
        url, receiver = hook
        config = tmp_path / "line.yaml"
        settings = {
            "line": line_name,
            "redis_url": redis_url,
            "database_url": f"sqlite:///{database}",
            "data_dir": str(tmp_path),
            "cameras": [{"id": "cam-s", "url": str(video)}],
            "verdict": {"line_alarm": {"n": 2, "close_rate": 0.0, "run": 1}},
            "outputs": {"webhook": {"url": url}},
        }
        config.write_text(yaml.safe_dump(settings))
        env = {"LINEWATCH_OUTPUTS__WEBHOOK__SECRET": secret}  # a secret from the environment
        rq_log = tmp_path / "rq.log"
        with rq_log.open("w") as rq_out:
            rq = subprocess.Popen(
                [sys.executable, "-m", "linewatch.cli", "worker", "rq", "--config", str(config)],
                stdout=rq_out,
                stderr=subprocess.STDOUT,
                env=clean_env(env),
            )
            try:
                run = linewatch("run", "--config", str(config), env=env, timeout=300)
                assert run.returncode == 0, run.stderr
                engine = open_database(f"sqlite:///{database}")
                with Session(engine) as session:
                    written = session.scalar(select(func.count()).select_from(Detection))
                    alerts = session.scalars(select(Alert)).all()
                    deliveries = sum(1 + (alert.state == "closed") for alert in alerts)
                engine.dispose()
                assert written == FRAMES, "the workers reached the password-protected Redis"
                assert deliveries, "the shipped model flags frames of the demo video"
                wait_for(lambda: len(receiver.received) >= deliveries, 60)
                status = linewatch("status", "--config", str(config), env=env)
                assert status.returncode == 0, status.stderr
            finally:
                rq.terminate()
                rq.wait(30)
            client = redis.Redis.from_url(redis_url)
            stored = every_value(client)
            client.close()

    assert len(receiver.received) == deliveries
    for headers, body in receiver.received:
        assert headers[SIGNATURE_HEADER] == hmac_signature(body, secret), "signed with the secret"
        assert headers[SIGNATURE_HEADER] != hmac_signature(body, "**********")
    said = run.stdout + run.stderr + rq_log.read_text() + status.stdout + status.stderr
    for hidden in (secret, password):
        assert hidden not in said, "never logged or shown"
        assert hidden.encode() not in stored, "never in Redis (RQ job arguments included)"


def test_analysis_job_arguments_carry_no_secret(
    redis_client, redis_url, line_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from linewatch.pipeline import jobs
    from tests.support.builders import make_settings

    settings = make_settings(
        tmp_path,
        line_name,
        redis_url.replace("redis://", "redis://:redispw@", 1),
        database_url="postgresql+psycopg://lw:dbpw@db/x",
        cameras=[{"id": "c", "url": "rtsp://op:campw@cam/1"}],
        outputs={"webhook": {"url": "http://h/hook", "secret": "hookpw"}},
    )
    video = tmp_path / "v.mp4"
    job = jobs.enqueue_analysis(redis_client, settings, video, "c")
    try:
        stored = repr(job.args) + repr(redis_client.hgetall(job.key))
        for hidden in ("redispw", "dbpw", "campw", "hookpw", "**********"):
            assert hidden not in stored
        assert job.args[0]["line"] == line_name
    finally:
        job.delete()
