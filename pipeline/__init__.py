"""The library, a folder per concern; the top holds what the folders share.

config: typed settings (YAML + LINEWATCH_*); keys: every Redis key name; defaults:
loop timings; retry: the one backoff; errors: user-facing errors; redact: URL
passwords out of text; metrics: Prometheus; runtime: logging, signals, supervised
processes; jobs: the RQ queue (file analysis, webhook delivery).
"""
