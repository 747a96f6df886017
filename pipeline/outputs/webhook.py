"""Alert webhooks over HTTP: the body signed with HMAC-SHA256, POSTed to the receiver.

No RQ here: pipeline/jobs.py queues one delivery job per alert state change and
the job calls `post`. The secret stays in the sink: only the signature is queued.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from dataclasses import dataclass

from linewatch.pipeline.redact import redact_url

SIGNATURE_HEADER = "X-Linewatch-Signature"
HTTP_TIMEOUT_S = 10.0  # default wait for the receiver's answer


class WebhookFailed(RuntimeError):
    """The receiver did not accept the alert; RQ retries the job."""


@dataclass(frozen=True)
class Webhook:
    """Where alerts are POSTed, and the secret their signature is made with."""

    url: str
    secret: str | None = None
    timeout_s: float = HTTP_TIMEOUT_S


def sign(body: bytes, secret: str) -> str:
    """The X-Linewatch-Signature value: `sha256=` + HMAC-SHA256 of the body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: str, signature: str | None, timeout_s: float) -> int:
    """POST the alert JSON with its signature (when signed); returns the HTTP status.
    A receiver that does not answer within `timeout_s` fails the attempt (WebhookFailed);
    errors name the URL without its credentials."""
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if signature:
        request.add_header(SIGNATURE_HEADER, signature)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"webhook {redact_url(url)} answered {exc.code}") from exc
    except TimeoutError as exc:
        raise WebhookFailed(
            f"webhook {redact_url(url)} did not answer within {timeout_s:g} s "
            "(outputs.webhook.timeout_s)"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise WebhookFailed(f"webhook {redact_url(url)} unreachable: {exc}") from exc
