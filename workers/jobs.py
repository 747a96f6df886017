"""RQ job entry points: finite work that runs worker code, done by `linewatch worker rq`.

analyze_file: one video file through the running line (ingest only; the inference
and sink workers that serve the line do the rest). Enqueued by pipeline/jobs.py.
"""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from linewatch.pipeline.config import CameraSettings, Settings
from linewatch.pipeline.runtime import StopFlag
from linewatch.workers import ingest


def analyze_file(settings_data: dict[str, Any], video: str, camera_id: str) -> dict[str, int]:
    """RQ job: ingest a video file into the line; progress goes to the job's meta.
    `settings_data` holds only the line name and ingest settings (no secret is ever a job
    argument); the frames go to the Redis the job came from."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("analyze_file runs as an RQ job (`linewatch worker rq`)")
    settings = Settings.model_validate(settings_data)
    camera = CameraSettings(id=camera_id, url=video, live=False)
    client = job.connection

    def report(counters: Any) -> None:
        job.meta.update({"decoded": counters.decoded, "sent": counters.sent})
        job.save_meta()

    counters = ingest.run(client, camera, settings, StopFlag(), on_batch=report)
    report(counters)
    return {"decoded": counters.decoded, "sent": counters.sent, "dropped": counters.dropped}
