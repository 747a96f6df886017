"""The RQ control plane: finite jobs (analyse a video file, deliver an alert webhook).

This module is the RQ plumbing (queue, enqueueing, job listing); what a job does
lives with its concern: the webhook's HTTP + signature in outputs/webhook.py, file
analysis in workers/jobs.py (named by path: pipeline does not import workers).

Jobs are stored with RQ's JSON serializer, never pickle, and get deliberate
timeouts. The long-lived roles (ingest of cameras, inference, sink) are
supervised processes, not jobs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rq import Queue, Retry, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from linewatch.pipeline import keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.outputs import webhook
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)

QUEUE = keys.RQ_QUEUE
ANALYSIS_TIMEOUT_S = 6 * 3600  # a long file at real time; RQ's 180 s default is far too short
WEBHOOK_RETRY = Retry(max=5, interval=[5, 15, 60, 300, 900])
ANALYSIS_JOB = "linewatch.workers.jobs.analyze_file"  # by name: pipeline does not import workers
COMMAND_POLL_S = 1.0  # rq's worker-command channel (shutdown, stop or kill a job)


class PromptStop:
    """For rq workers: read rq's command channel with a 1 s poll instead of rq 3's 60 s.
    After the unsubscribe reply, rq's pubsub thread can miss its stop flag and wait out
    the whole poll, and the worker's teardown joins it: a stopping worker hung for up to
    a minute (seen in about 1 in 20 burst runs of the tests)."""

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=COMMAND_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class JobWorker(PromptStop, Worker):
    """`linewatch worker rq`: rq's forking worker on the linewatch queue."""


def queue(client: broker.Client) -> Queue:
    return Queue(QUEUE, connection=client, serializer=JSONSerializer)


def deliver_webhook(url: str, body: str, signature: str | None, timeout_s: float) -> int:
    """RQ job: one delivery attempt (outputs/webhook.py); a failure is retried by RQ."""
    return webhook.post(url, body, signature, timeout_s)


def enqueue_webhook(
    client: broker.Client,
    alert_id: int,
    state: str,
    payload: dict[str, Any],
    target: webhook.Webhook,
) -> Job | None:
    """One delivery job per alert state change: a sink replay does not deliver twice.
    The job carries the signed body, never the secret."""
    job_id = keys.webhook_job_id(alert_id, state)
    if Job.exists(job_id, connection=client):
        return None
    body = json.dumps(payload, sort_keys=True)
    signature = webhook.sign(body.encode(), target.secret) if target.secret else None
    return queue(client).enqueue_call(
        deliver_webhook,
        args=(target.url, body, signature, target.timeout_s),
        job_id=job_id,
        timeout=int(target.timeout_s) + 30,
        retry=WEBHOOK_RETRY,
        result_ttl=7 * 86400,
        failure_ttl=30 * 86400,
        description=f"deliver alert {alert_id} ({state})",
    )


# What an analysis job needs of the line's settings: the job runs ingest only, on the
# queue's own Redis connection. Job arguments are stored in Redis, so no URL (with its
# password), camera or secret is ever among them.
ANALYSIS_SETTINGS = {"line", "ingest"}


def enqueue_analysis(client: broker.Client, settings: Settings, video: Path, camera_id: str) -> Job:
    data = settings.model_dump(mode="json", include=ANALYSIS_SETTINGS)
    return queue(client).enqueue_call(
        ANALYSIS_JOB,
        args=(data, str(video.resolve()), camera_id),
        timeout=ANALYSIS_TIMEOUT_S,
        result_ttl=7 * 86400,
        failure_ttl=30 * 86400,
        description=f"analyse {video.name}",
        meta={"video": str(video), "camera": camera_id},
    )


def recent_jobs(client: broker.Client, limit: int = 50) -> list[Job]:
    """Queued, running, finished and failed jobs of the linewatch queue, newest first."""
    q = queue(client)
    ids: list[str] = list(q.get_job_ids())
    for registry in (
        q.started_job_registry,
        q.finished_job_registry,
        q.failed_job_registry,
        q.scheduled_job_registry,
    ):
        ids += registry.get_job_ids()
    jobs = [
        j
        for j in Job.fetch_many(
            list(dict.fromkeys(ids)), connection=client, serializer=JSONSerializer
        )
        if j is not None
    ]
    return sorted(jobs, key=lambda j: j.enqueued_at or j.created_at, reverse=True)[:limit]
