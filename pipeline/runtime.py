"""Process start-up and supervision: logging, signals, spawned worker processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from linewatch.pipeline import defaults
from linewatch.pipeline.orphans import die_with_parent
from linewatch.pipeline.redact import redact_text
from linewatch.pipeline.retry import Backoff

log = logging.getLogger(__name__)


class _WorkerContext(logging.Filter):
    """Stamps every record with the worker (role:pid) and, for ingest, the camera id (of
    the camera's thread, `ingest:<camera>`, else the role's cameras); URL passwords are
    masked."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role
        self.camera = role.split(":", 1)[1] if role.startswith("ingest:") else None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)  # a last guard: callers already redact what they log
        if redacted != message:
            record.msg, record.args = redacted, None
        record.role = self.role
        record.worker = f"{self.role}:{os.getpid()}"
        thread = record.threadName or ""
        camera = thread.removeprefix("ingest:") if thread.startswith("ingest:") else self.camera
        if camera and not hasattr(record, "camera"):
            record.camera = camera
        return True


def setup_logging(role: str, debug: bool = False) -> None:
    """Text lines by default; one JSON object per line with LINEWATCH_LOG_FORMAT=json."""
    level = "DEBUG" if debug else os.environ.get("LINEWATCH_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.addFilter(_WorkerContext(role))
    kind = os.environ.get("LINEWATCH_LOG_FORMAT", "text").lower()
    handler.setFormatter(_formatter(kind))
    logging.basicConfig(
        level=level if isinstance(logging.getLevelName(level), int) else "INFO",
        handlers=[handler],
        force=True,
    )
    if kind not in ("text", "json"):
        log.warning("LINEWATCH_LOG_FORMAT=%r is not text or json; writing text", kind)


def _formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(worker)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter("%(asctime)s %(levelname)s [%(worker)s] %(name)s: %(message)s")


class StopFlag:
    """Set by the first SIGINT/SIGTERM (finish the batch, then exit); a second exits now."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._event.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(130)
        log.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


@dataclass
class Role:
    """One supervised process: `target(*args)` in a spawned interpreter.

    `args` reach the child pickled over multiprocessing's pipe (never logged, never in
    Redis), so a `Settings` object arrives with its secrets intact."""

    name: str
    target: Callable[..., Any]
    args: tuple[Any, ...]
    restart: bool = True
    process: multiprocessing.process.BaseProcess | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(first_s=defaults.RESTART_FIRST_S))
    started_at: float = 0.0
    restart_at: float | None = None
    finished: bool = field(default=False)
    last_beat: float | None = None  # the running process's last heartbeat value seen
    beat_seen_at: float | None = None  # when the supervisor saw it change (monotonic)
    hung: int = 0  # processes the watchdog killed


class Supervisor:
    """Starts roles as spawned processes, restarts crashed ones with backoff, kills hung
    ones (heartbeat older than `hang_limit_s`; 0: never) so they restart too, stops all."""

    def __init__(self, roles: list[Role], hang_limit_s: float = 0.0) -> None:
        self.roles = roles
        self.hang_limit_s = hang_limit_s
        self._watched_at = float("-inf")
        self._context = multiprocessing.get_context("spawn")

    def start(self, prefix: str = "") -> None:
        """Launch the roles whose name starts with `prefix` that are not started yet."""
        for role in self.roles:
            if role.process is None and role.name.startswith(prefix):
                self._launch(role)

    def _launch(self, role: Role) -> None:
        process = self._context.Process(
            target=_supervised, args=(role.target, os.getpid(), *role.args), name=role.name
        )
        process.start()  # one that fails to start is not kept: stop() would join it
        role.process, role.started_at = process, time.monotonic()
        role.last_beat = role.beat_seen_at = None

    def watch(self, beats: Mapping[int, float], now: float | None = None) -> list[Role]:
        """Kill the roles whose process stopped beating: `beats` maps a pid to its last
        heartbeat. Silence is timed from when the supervisor saw the beat change; a
        process that never beat (still loading) is left alone, and a gap in the
        watching (Redis unreadable) is not counted. poll() then restarts the killed
        roles as after a crash. Returns them."""
        now = time.monotonic() if now is None else now
        blind = now - self._watched_at > defaults.WATCH_BLIND_S
        self._watched_at = now
        killed = []
        for role in self.alive() if self.hang_limit_s else []:
            assert role.process is not None
            silent = _silence(role, beats.get(role.process.pid or 0), now, blind)
            if silent is not None and silent > self.hang_limit_s:
                self._kill_hung(role, silent)
                killed.append(role)
        return killed

    def _kill_hung(self, role: Role, silent_s: float) -> None:
        assert role.process is not None
        log.error(
            "%s (pid %s) sent no heartbeat for %.0f s (supervisor.hang_limit_s %.0f): hung; "
            "killing it, it restarts and its pending entries are reclaimed",
            role.name,
            role.process.pid,
            silent_s,
            self.hang_limit_s,
        )
        role.process.kill()  # SIGKILL: also ends a stopped (SIGSTOP) process
        role.process.join(5)
        role.hung += 1
        role.last_beat = role.beat_seen_at = None

    def poll(self) -> None:
        """Restart roles that died (after a backoff); mark finished ones."""
        now = time.monotonic()
        for role in self.roles:
            process = role.process
            if role.finished or process is None or process.is_alive():
                continue
            if role.restart_at is not None:
                if now >= role.restart_at:
                    role.restart_at = None
                    self._launch(role)
                continue
            if not role.restart:
                # A finite job (a file) is not run twice: a rerun would send its frames again.
                role.finished = True
                if process.exitcode != 0:
                    log.error("%s failed with exit code %s", role.name, process.exitcode)
            elif process.exitcode == 2:
                role.finished = True
                log.error("%s stopped on a configuration or input error (see above)", role.name)
            else:
                if now - role.started_at >= defaults.HEALTHY_PROCESS_S:
                    role.backoff.reset()  # it ran a while: this crash starts the waits over
                delay = role.backoff.next()
                role.restarts += 1
                role.restart_at = now + delay
                log.warning(
                    "%s exited with code %s; restarting in %.0f s",
                    role.name,
                    process.exitcode,
                    delay,
                )

    def alive(self, prefix: str = "") -> list[Role]:
        return [
            r
            for r in self.roles
            if r.name.startswith(prefix) and r.process and r.process.is_alive()
        ]

    def stop(self, timeout_s: float = 30.0) -> None:
        for role in self.alive():
            os.kill(role.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        for role in self.roles:
            if role.process is not None:
                role.process.join(max(0.1, deadline - time.monotonic()))
                if role.process.is_alive():
                    log.warning("%s did not stop in %.0f s; killing it", role.name, timeout_s)
                    role.process.kill()
                    role.process.join()


def _silence(role: Role, beat: float | None, now: float, blind: bool) -> float | None:
    """Seconds since the role's heartbeat last changed as the supervisor saw it (from now
    after a `blind` gap); None before its first beat."""
    if beat is not None and beat != role.last_beat:
        role.last_beat, role.beat_seen_at = beat, now
    elif blind and role.beat_seen_at is not None:
        role.beat_seen_at = now
    return None if role.beat_seen_at is None else now - role.beat_seen_at


def _supervised(target: Callable[..., object], parent_pid: int, *args: Any) -> None:
    """A role's process: stopped (SIGTERM, so it finishes what it holds) when the
    supervisor dies without stopping it (kill -9, OOM), instead of running on orphaned."""
    die_with_parent(parent_pid, signal.SIGTERM)
    target(*args)


def profiled(role: str, body: Callable[[StopFlag], object]) -> Callable[[StopFlag], object]:
    """`body` under cProfile when LINEWATCH_PROFILE_DIR is set (bench/run_bench.py): the
    stats go to <dir>/<role>-<pid>.prof when the worker ends."""
    folder = os.environ.get("LINEWATCH_PROFILE_DIR")
    if not folder:
        return body

    def run(stop: StopFlag) -> object:
        import cProfile

        profile = cProfile.Profile()
        try:
            return profile.runcall(body, stop)
        finally:
            name = role.replace(":", "-").replace("/", "-")
            profile.dump_stats(os.path.join(folder, f"{name}-{os.getpid()}.prof"))

    return run


def serve_metrics(role: str, port: int) -> None:
    """/metrics and /healthz on `port`; a port already in use costs the endpoint, not
    the worker: a line that stopped inspecting for want of a metrics port would lose
    more than its metrics (`linewatch run` gives worker i `metrics_port + i`)."""
    from linewatch.pipeline import metrics

    try:
        metrics.serve(port)
    except OSError as exc:
        log.error(
            "%s: metrics port %d unavailable (%s): this worker runs without /metrics and "
            "/healthz; choose a metrics_port whose next ports (one per worker) are free",
            role,
            port,
            exc.strerror or exc,
        )
        return
    log.info("metrics on :%d/metrics, health on :%d/healthz", port, port)


def run_worker(
    role: str, debug: bool, body: Callable[[StopFlag], object], metrics_port: int = 0
) -> None:
    """Entry point of a worker process: logging, signals, metrics endpoint (when a port
    is given), and exit code 2 on user errors."""
    from linewatch.pipeline.errors import LinewatchError

    setup_logging(role, debug)
    stop = StopFlag().install()
    if metrics_port:
        serve_metrics(role, metrics_port)
    try:
        profiled(role, body)(stop)
    except LinewatchError as exc:
        logging.getLogger(role).error("%s", exc)
        raise SystemExit(2) from None
