"""RQ control plane with the real rq worker: file analysis and signed webhook delivery."""

import json
import random
from pathlib import Path

import pytest
from rq import SimpleWorker

from linewatch.demo import write_demo_video
from linewatch.pipeline import jobs
from linewatch.pipeline.outputs import webhook
from linewatch.pipeline.streams import broker
from tests.support.receivers import webhook_receiver
from tests.support.services import linewatch


@pytest.fixture()
def receiver():  # type: ignore[no-untyped-def]
    with webhook_receiver() as hook:
        yield hook


@pytest.fixture()
def rq_redis(redis_client):  # type: ignore[no-untyped-def]
    """The linewatch queue emptied before and after (the queue name is global)."""
    jobs.queue(redis_client).empty()
    yield redis_client
    jobs.queue(redis_client).empty()


class InProcessWorker(jobs.PromptStop, SimpleWorker):
    """Runs the queued jobs in this process, as `linewatch worker rq` would in a fork."""


def work(client: broker.Client) -> None:
    worker = InProcessWorker([jobs.QUEUE], connection=client, serializer=jobs.JSONSerializer)
    worker.work(burst=True)


def test_webhook_is_signed_and_delivered_once(rq_redis, receiver) -> None:  # type: ignore[no-untyped-def]
    url, handler = receiver
    alert_id = random.randrange(10**9)
    payload = {"alert_id": alert_id, "state": "open", "label": "crack"}
    target = webhook.Webhook(url, "s3cret")
    job = jobs.enqueue_webhook(rq_redis, alert_id, "open", payload, target)
    assert job is not None
    assert jobs.enqueue_webhook(rq_redis, alert_id, "open", payload, target) is None
    assert "s3cret" not in json.dumps(job.args), "only the signature is queued"
    work(rq_redis)
    assert len(handler.received) == 1
    headers, body = handler.received[0]
    assert json.loads(body) == payload
    assert headers[webhook.SIGNATURE_HEADER] == webhook.sign(body, "s3cret")
    assert job.get_status(refresh=True) == "finished"


def test_failing_webhook_is_retried_with_backoff(rq_redis, receiver, caplog) -> None:  # type: ignore[no-untyped-def]
    url, handler = receiver
    handler.status = 500
    alert_id = random.randrange(10**9)
    job = jobs.enqueue_webhook(
        rq_redis, alert_id, "open", {"alert_id": alert_id}, webhook.Webhook(url)
    )
    work(rq_redis)
    assert len(handler.received) == 1
    job.refresh()
    assert job.get_status() == "scheduled" and job.retries_left == 4
    assert "answered 500" in caplog.text, "the worker log says why"


def test_a_hanging_webhook_times_out_and_is_retried(rq_redis, receiver, caplog) -> None:  # type: ignore[no-untyped-def]
    url, handler = receiver
    handler.delay_s = 30
    alert_id = random.randrange(10**9)
    target = webhook.Webhook(url, timeout_s=1)
    job = jobs.enqueue_webhook(rq_redis, alert_id, "open", {"alert_id": alert_id}, target)
    work(rq_redis)
    job.refresh()
    # A worker held until the receiver answers (30 s, then 200) would have finished the
    # job; a timed-out delivery leaves it failed and scheduled for a retry. (No wall-clock
    # bound here: one took 61 s on a loaded 2-core machine.)
    assert job.get_status() == "scheduled" and job.retries_left == 4
    assert "did not answer within 1 s" in caplog.text


def test_analyze_enqueues_a_file_job_that_feeds_the_line(
    rq_redis, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    video = tmp_path / "batch-42.mp4"
    write_demo_video(video, 24, fps=10)
    env = {"LINEWATCH_REDIS_URL": redis_url, "LINEWATCH_LINE": line_name}
    enqueued = linewatch("analyze", str(video), env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.split()[1].rstrip(":")
    work(rq_redis)
    job = jobs.Job.fetch(job_id, connection=rq_redis, serializer=jobs.JSONSerializer)
    assert job.get_status() == "finished"
    assert job.return_value() == {"decoded": 24, "sent": 24, "dropped": 0}
    assert job.meta["sent"] == 24 and job.timeout == jobs.ANALYSIS_TIMEOUT_S
    assert rq_redis.xlen(f"lw:frames:{line_name}") == 24
    listing = linewatch("jobs", env={**env, "COLUMNS": "200"})
    assert job_id in listing.stdout and "finished" in listing.stdout

    missing = linewatch("analyze", str(tmp_path / "nope.mp4"), env=env)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_sink_webhook_notifier_sends_the_alert_json(rq_redis, receiver) -> None:  # type: ignore[no-untyped-def]
    from linewatch.pipeline.outputs.notifiers import WebhookNotifier
    from linewatch.schemas.messages import AlertMessage

    url, handler = receiver
    alert_id = random.randrange(10**9)
    alert = AlertMessage(alert_id, "cam1", "crack", "open", 12, 5, None, None, 0.93, 3)
    WebhookNotifier(rq_redis, webhook.Webhook(url)).notify(alert)
    WebhookNotifier(rq_redis, webhook.Webhook(url)).notify(alert)
    work(rq_redis)
    assert [json.loads(body) for _, body in handler.received] == [json.loads(alert.to_json())]
