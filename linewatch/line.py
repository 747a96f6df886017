"""`linewatch run`: the whole line on one machine as supervised processes."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from linewatch.pipeline import defaults, keys, metrics
from linewatch.pipeline.config import CameraSettings, Settings
from linewatch.pipeline.errors import ConfigError, LinewatchError
from linewatch.pipeline.inference.loading import describe_model
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.runtime import Role, StopFlag, Supervisor
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis
from linewatch.pipeline.video.source import SourceError, SourceOptions, is_live, open_frames
from linewatch.workers import inference, ingest, sink

log = logging.getLogger(__name__)

Progress = Callable[["LineStats"], None]
PROBE_THREADS = 8  # cameras probed at once at start-up


@dataclass(frozen=True)
class LineStats:
    decoded: int
    sent: int
    dropped: int
    inferred: int
    stale: int
    undecodable: int
    written: int
    dead_letters: int
    frames_backlog: int
    results_backlog: int


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """The settings with a Redis URL: the configured one, else a private server for the run."""
    if settings.has_redis:
        broker.connect_to(settings, "`linewatch run`").close()
        yield settings
        return
    running = broker.embedded_url(settings.data_dir)
    if running:  # two lines would share one SQLite file and one address
        raise LinewatchError(
            f"a line is already running on data_dir {settings.data_dir} (its Redis: "
            f"{running}); stop it first, or give this line another data_dir"
        )
    with EmbeddedRedis(settings.data_dir / "redis") as server:
        log.info("no redis_url configured: started a private redis-server on %s", server.url)
        yield settings.model_copy(update={"redis_url": server.url})


def check_line(settings: Settings, strict: bool = False) -> None:
    """Fail before starting processes on what can be checked up front. A live camera that
    cannot be reached is not fatal (its ingest worker keeps retrying, in `backoff`, while
    the rest of the line runs) unless `strict` (commissioning: every camera must answer)."""
    if not settings.cameras:
        raise ConfigError("no cameras configured; add at least one under `cameras:`")
    describe_model(settings.inference.model_dir)
    for camera in settings.cameras:  # every view is resized to the model's input size
        ingest.model_view(settings.inference.model_dir, camera.id)
    open_database(settings.resolved_database_url()).dispose()
    with ThreadPoolExecutor(PROBE_THREADS) as pool:  # a dead camera waits its open timeout
        probes = [
            (camera, pool.submit(probe_camera, camera, settings)) for camera in settings.cameras
        ]
    for camera, probe in probes:
        try:
            probe.result()
        except SourceError as exc:
            if strict or not is_live(camera.url):
                raise
            log.warning(
                "%s; the line starts without it and keeps retrying "
                "(`linewatch run --strict` stops here instead)",
                exc,
            )


def probe_camera(camera: CameraSettings, settings: Settings) -> None:
    """Open the source and decode one frame; SourceError names the camera and what to do."""
    options = SourceOptions(
        open_timeout_s=settings.ingest.open_timeout_s,
        read_timeout_s=settings.ingest.read_timeout_s,
    )
    frames = None
    try:
        frames = open_frames(camera.url, options)
        next(frames)
    except StopIteration:
        raise SourceError(f"camera {camera.id}: {redact_url(camera.url)} has no frames") from None
    except SourceError as exc:
        raise SourceError(f"camera {camera.id}: {exc}") from exc
    finally:
        if frames is not None:
            frames.close()


def read_stats(client: broker.Client, settings: Settings) -> LineStats:
    ingest_totals = {"decoded": 0, "sent": 0, "dropped": 0}
    for camera in settings.cameras:
        values = client.hgetall(settings.camera_key(camera.id, keys.INGEST))
        for name in ingest_totals:
            ingest_totals[name] += int(values.get(name.encode(), 0))
    line = {k.decode(): int(v) for k, v in client.hgetall(settings.stats_key).items()}
    return LineStats(
        **ingest_totals,
        inferred=line.get("inferred", 0),
        stale=line.get("stale", 0),
        undecodable=line.get("undecodable", 0),
        written=line.get("written", 0),
        dead_letters=line.get("dead_letters", 0),
        frames_backlog=broker.backlog(client, settings.frames_stream),
        results_backlog=broker.backlog(client, settings.results_stream),
    )


def line_roles(settings: Settings, debug: bool) -> list[Role]:
    """The line's processes. Each gets the validated settings object itself (secrets
    intact; see Role), never a JSON dump, which masks every SecretStr."""
    roles = [
        Role(f"ingest:{ids}", ingest.main, (settings, ids, debug), restart=live)
        for ids, live in ingest_groups(settings)
    ]
    roles += [
        Role(f"infer:{i}", inference.main, (settings, inference.default_worker_id(i), debug))
        for i in range(settings.inference.workers)
    ]
    roles.append(Role("sink", sink.main, (settings, None, debug)))
    if settings.metrics_port:
        for index, role in enumerate(roles):
            role.args = (*role.args, settings.metrics_port + index)
    return roles + api_roles(settings, debug)


def api_roles(settings: Settings, debug: bool) -> list[Role]:
    """`api.enabled`: the HTTP API and dashboard as one more process (its own /metrics).
    It serves while the line runs and stops with it."""
    from linewatch.api import server

    return [Role("api", server.main, (settings, debug))] if settings.api.enabled else []


def ingest_groups(settings: Settings) -> list[tuple[str, bool]]:
    """The ingest processes: up to `ingest.cameras_per_process` camera ids each (comma-
    separated), live cameras apart from files (a crashed live process is restarted; a
    file is never read twice), in configuration order."""
    size = settings.ingest.cameras_per_process
    groups: list[tuple[str, bool]] = []
    for live in (True, False):
        ids = [c.id for c in settings.cameras if is_live(c.url) == live]
        groups += [(",".join(ids[i : i + size]), live) for i in range(0, len(ids), size)]
    return sorted(groups, key=lambda group: _first_index(settings, group[0]))


def _first_index(settings: Settings, ids: str) -> int:
    first = ids.split(",")[0]
    return next(i for i, camera in enumerate(settings.cameras) if camera.id == first)


def run_line(
    settings: Settings, debug: bool = False, progress: Progress | None = None, strict: bool = False
) -> LineStats:
    """Run until stopped, or until every file camera is fully written when all are files.
    `strict`: an unreachable live camera stops the start-up (see check_line)."""
    check_line(settings, strict)
    stop = StopFlag().install()
    with redis_for(settings) as settings:
        client = broker.connect_to(settings, "`linewatch run`", attempts=3)
        supervisor = Supervisor(line_roles(settings, debug), settings.supervisor.hang_limit_s)
        try:
            _start_consumers_first(supervisor, client, settings, stop)
            stats = _supervise(supervisor, client, settings, stop, progress)
        finally:
            supervisor.stop()
        try:
            stats = read_stats(client, settings)
        except broker.RedisError:
            log.warning("Redis unavailable at the end of the run: counters as last seen")
        client.close()
    failed = [r.name for r in supervisor.roles if r.finished and r.process and r.process.exitcode]
    if failed:
        raise LinewatchError(f"{', '.join(failed)} stopped on an error (logged above)")
    return stats


def _start_consumers_first(
    supervisor: Supervisor, client: broker.Client, settings: Settings, stop: StopFlag
) -> None:
    """Start inference and sink, wait for their heartbeats (model loaded), then ingest,
    so the first frames do not wait behind model start-up."""
    supervisor.start("api")
    supervisor.start("infer")
    supervisor.start("sink")
    expected = settings.inference.workers + 1
    deadline = time.monotonic() + defaults.READY_TIMEOUT_S
    while time.monotonic() < deadline and not stop.wait(0.1):
        supervisor.poll()
        try:
            if len(broker.live_keys(client, settings.worker_key("*"))) >= expected:
                break
        except broker.RedisError:
            continue
        if any(role.finished for role in supervisor.roles):
            return  # a consumer stopped on an error: no frames are sent that nothing reads
    else:
        if not stop.is_set():
            log.warning(
                "workers not ready after %d s; starting ingest anyway", defaults.READY_TIMEOUT_S
            )
    supervisor.start("ingest")


def _supervise(
    supervisor: Supervisor,
    client: broker.Client,
    settings: Settings,
    stop: StopFlag,
    progress: Progress | None,
) -> LineStats:
    stats = read_stats(client, settings)
    watched = 0.0
    while not stop.wait(0.25):
        supervisor.poll()
        try:
            stats = read_stats(client, settings)
            if time.monotonic() - watched >= defaults.HEARTBEAT_EVERY_S:
                watched = time.monotonic()
                watch_workers(supervisor, client, settings)
        except broker.RedisError:
            continue  # the workers wait the outage out; so does the supervisor
        if progress:
            progress(stats)
        if _finished(supervisor, stats):
            break
        if _consumers_gone(supervisor):
            break
    return stats


def worker_beats(client: broker.Client, settings: Settings) -> dict[int, float]:
    """pid -> last heartbeat (epoch s) of the line's inference workers and sink."""
    beats = {}
    for key in broker.live_keys(client, settings.worker_key("*")):
        fields = client.hgetall(key)
        if b"pid" in fields and b"seen" in fields:
            beats[int(fields[b"pid"])] = float(fields[b"seen"])
    return beats


def watch_workers(supervisor: Supervisor, client: broker.Client, settings: Settings) -> None:
    """The watchdog: hung workers are killed (poll() restarts them), counted in the
    metric and in the line's stats hash (`linewatch status`)."""
    for role in supervisor.watch(worker_beats(client, settings)):
        metrics.WATCHDOG_RESTARTS.labels(role.name.split(":")[0]).inc()
        client.hincrby(settings.stats_key, "watchdog_restarts", 1)


def _consumers_gone(supervisor: Supervisor) -> bool:
    """Every inference worker, or the sink, stopped on an error: nothing can progress."""
    for prefix in ("infer", "sink"):
        roles = [r for r in supervisor.roles if r.name.startswith(prefix)]
        if roles and all(r.finished for r in roles):
            return True
    return False


def _finished(supervisor: Supervisor, stats: LineStats) -> bool:
    ingest_roles = [r for r in supervisor.roles if r.name.startswith("ingest")]
    if not all(r.finished for r in ingest_roles):
        return False
    return stats.frames_backlog == 0 and stats.results_backlog == 0
