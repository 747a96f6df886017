"""The RQ control plane: finite jobs (analyse a video file, deliver an alert webhook).

Jobs are stored with RQ's JSON serializer, never pickle, and get deliberate
timeouts. The long-lived roles (ingest of cameras, inference, sink) are
supervised processes, not jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from linewatch.pipeline import keys
from linewatch.pipeline.config import Settings
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.streams import broker

log = logging.getLogger(__name__)

QUEUE = keys.RQ_QUEUE
ANALYSIS_TIMEOUT_S = 6 * 3600  # a long file at real time; RQ's 180 s default is far too short
WEBHOOK_HTTP_TIMEOUT_S = 10.0  # default wait for the receiver's answer
WEBHOOK_RETRY = Retry(max=5, interval=[5, 15, 60, 300, 900])
SIGNATURE_HEADER = "X-Linewatch-Signature"
ANALYSIS_JOB = (
    "linewatch.workers.analysis.analyze_file"  # by name: pipeline does not import workers
)


class WebhookFailed(RuntimeError):
    """The receiver did not accept the alert; RQ retries the job."""


def queue(client: broker.Client) -> Queue:
    return Queue(QUEUE, connection=client, serializer=JSONSerializer)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Webhook:
    """Where alerts are POSTed; the secret stays in the sink (only the signature is queued)."""

    url: str
    secret: str | None = None
    timeout_s: float = WEBHOOK_HTTP_TIMEOUT_S


def deliver_webhook(url: str, body: str, signature: str | None, timeout_s: float) -> int:
    """POST the alert JSON with its HMAC-SHA256 signature (when signed); returns the status.
    A receiver that does not answer within `timeout_s` fails the attempt; RQ retries it."""
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if signature:
        request.add_header(SIGNATURE_HEADER, signature)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"webhook {redact_url(url)} answered {exc.code}") from None
    except TimeoutError:
        raise WebhookFailed(
            f"webhook {redact_url(url)} did not answer within {timeout_s:g} s "
            "(alerts.webhook_timeout_s)"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise WebhookFailed(f"webhook {redact_url(url)} unreachable: {exc}") from None


def enqueue_webhook(
    client: broker.Client, alert_id: int, state: str, payload: dict[str, Any], webhook: Webhook
) -> Job | None:
    """One delivery job per alert state change: a sink replay does not deliver twice."""
    job_id = keys.webhook_job_id(alert_id, state)
    if Job.exists(job_id, connection=client):
        return None
    body = json.dumps(payload, sort_keys=True)
    signature = sign(body.encode(), webhook.secret) if webhook.secret else None
    return queue(client).enqueue_call(
        deliver_webhook,
        args=(webhook.url, body, signature, webhook.timeout_s),
        job_id=job_id,
        timeout=int(webhook.timeout_s) + 30,
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
