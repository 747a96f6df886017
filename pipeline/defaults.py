"""Timing constants of the worker loops: retry backoff, heartbeats, reclaiming, restarts."""

BACKOFF_FIRST_S = 0.5  # first wait before trying again (Redis, database, camera, restart)
BACKOFF_MAX_S = 30.0  # the waits double up to this
HEALTHY_STREAM_S = 30.0  # a camera stream that ran this long starts its backoff over
HEALTHY_PROCESS_S = 60.0  # ...and so does a worker process
RESTART_FIRST_S = 1.0  # first wait before a crashed worker process is started again

HEARTBEAT_EVERY_S = 1.0  # a consumer refreshes its heartbeat hash this often
HEARTBEAT_TTL_S = 15  # ...which expires this long after the last refresh
CLAIM_IDLE_MS = 60_000  # entries pending this long at another consumer are taken over
READY_TIMEOUT_S = 120  # `linewatch run` waits this long for inference + sink heartbeats
WATCH_BLIND_S = 5.0  # the watchdog did not read heartbeats this long: silence restarts
MODEL_POLL_S = 2.0  # ingest and inference read the line's running model folder this often
