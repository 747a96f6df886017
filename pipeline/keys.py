"""Every Redis key name linewatch uses, in one place (like arq's constants.py).

Each line's keys carry the line's name, so several lines share one Redis.
`Settings` exposes the ones of its line (`settings.frames_stream`, ...).
"""

from __future__ import annotations

PREFIX = "lw"

# Per-camera keys: camera(line, camera_id, kind).
SEQ = "seq"  # string: the last frame seq reserved (INCRBY), survives reconnects
PART_ID = "part_id"  # string: the last part id reserved (parts mode), never reused
INGEST = "ingest"  # hash: decoded / sent / dropped / done counters and the camera's state
PREVIEW = "preview"  # hash: the camera's live view (JPEG + boxes), overwritten, with a TTL
STATES = "states"  # stream: the camera's state transitions (from, to, reason, ts)

ALERTS_CHANNEL = (
    f"{PREFIX}:alerts"  # pub/sub channel of alert JSON (outputs.pubsub.alerts_channel default)
)
VERDICTS_CHANNEL = f"{PREFIX}:verdicts"  # pub/sub: every part's PartVerdict JSON
BROKER_FAILOVER = f"{PREFIX}:broker:failover"  # hash: last Sentinel failover seen: at, from, to
RQ_QUEUE = "linewatch"  # the RQ queue; RQ names its own keys rq:queue:<name>, rq:job:<id>


def frames_stream(line: str) -> str:
    """Frames from ingest, read by the `infer` consumer group."""
    return f"{PREFIX}:frames:{line}"


def results_stream(line: str) -> str:
    """Inference results, read by the `sink` consumer group."""
    return f"{PREFIX}:results:{line}"


def dead_letter_stream(line: str) -> str:
    """Malformed entries of either stream, with the reason (`linewatch dlq`)."""
    return f"{PREFIX}:dead:{line}"


def stats(line: str) -> str:
    """Hash of line-wide counters (inferred, stale, written, ...)."""
    return f"{PREFIX}:stats:{line}"


def camera(line: str, camera_id: str, kind: str) -> str:
    """A camera's key of `kind` (SEQ, PART_ID, INGEST, STATES)."""
    return f"{PREFIX}:{kind}:{line}:{camera_id}"


def worker(line: str, worker_id: str) -> str:
    """Heartbeat hash of a running inference or sink worker (expires when it dies)."""
    return f"{PREFIX}:worker:{line}:{worker_id}"


def sink_lease(line: str) -> str:
    """String: the consumer name of the line's active sink, with a TTL (streams/lease.py)."""
    return f"{PREFIX}:sink:{line}"


def model(line: str) -> str:
    """Hash: the model folder `linewatch model use` asked the line's workers to run."""
    return f"{PREFIX}:model:{line}"


def announced(line: str, what: str) -> str:
    """Marker of an announcement published on pub/sub (`verdict:<camera>:<part>`,
    `alert:<id>:<state>`): a sink that gives it again after a kill does not repeat it."""
    return f"{PREFIX}:announced:{line}:{what}"


def webhook_job_id(alert_id: int, state: str) -> str:
    """RQ job id of an alert state's webhook delivery (one job per state change)."""
    return f"alert-{alert_id}-{state}-webhook"


def gallery(line: str) -> str:
    """Hash: per model version, the revision of its gallery (`linewatch gallery add`
    bumps it; inference workers reload the gallery when it moves)."""
    return f"{PREFIX}:gallery:{line}"
