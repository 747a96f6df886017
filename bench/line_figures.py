"""Figures of a `linewatch run` read back from its database and its processes.

Latency is per part: `decided_ts` (the sink wrote the verdict) minus the capture time of
the frame that ended the part (`ended_ts`, stamped by ingest's tracker on that frame)
— "part-end frame -> verdict" — and minus the part's last sighting (`last_capture_ts`,
one sampling interval earlier: a part is known to have left only on the next frame).
Per-hop medians are per view, from the stamps each view's detection row carries.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linewatch.pipeline.config import Settings
from linewatch.pipeline.storage.database import open_database
from linewatch.pipeline.streams import broker
from linewatch.schemas.tables import Detection, Part

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOPS = "capture->ingest / queue / batch wait / infer / to SQL / view row->verdict"


@dataclass(frozen=True)
class PartFigures:
    parts: int
    views: int
    seconds: float  # first capture -> last verdict row
    end_to_verdict_ns: list[int]  # part-end frame -> verdict
    last_seen_to_verdict_ns: list[int]
    verdicts: dict[str, int]
    late: int

    @property
    def parts_per_s(self) -> float:
        return self.parts / self.seconds if self.seconds > 0 else 0.0

    @property
    def views_per_s(self) -> float:
        return self.views / self.seconds if self.seconds > 0 else 0.0


def part_figures(settings: Settings, *, live: bool) -> PartFigures:
    """`live`: the cameras are live (a part's verdict is due `deadline_ms` after its end),
    else files (`file_wait_s`): that is how its end time is read back from its deadline."""
    verdict = settings.verdict
    wait_ns = verdict.deadline_ms * 10**6 if live else int(verdict.file_wait_s * 1e9)
    engine = open_database(settings.resolved_database_url())
    with Session(engine) as session:
        rows = session.execute(
            select(Part.first_capture_ts, Part.last_capture_ts, Part.deadline_ts, Part.decided_ts)
        ).all()
        views = session.scalar(select(func.count()).select_from(Detection)) or 0
        counts = session.execute(select(Part.verdict, func.count()).group_by(Part.verdict))
        verdicts = {verdict: count for verdict, count in counts.all()}
        late = session.scalar(select(func.count()).where(Part.late)) or 0
    engine.dispose()
    if not rows:
        return PartFigures(0, views, 0.0, [], [], verdicts, late)
    first, last_seen, deadline, decided = (
        np.array(column, np.int64) for column in zip(*rows, strict=True)
    )
    return PartFigures(
        parts=len(rows),
        views=int(views),
        seconds=float(decided.max() - first.min()) / 1e9,
        end_to_verdict_ns=list(decided - (deadline - wait_ns)),
        last_seen_to_verdict_ns=list(decided - last_seen),
        verdicts=verdicts,
        late=int(late),
    )


def hop_medians(settings: Settings) -> str:
    """Median ms per hop of a view, and from a part's last view row to its verdict."""
    engine = open_database(settings.resolved_database_url())
    with Session(engine) as session:
        rows = session.execute(
            select(
                Detection.ingest_ts - Detection.capture_ts,
                Detection.dequeue_ts - Detection.ingest_ts,
                Detection.infer_start_ts - Detection.dequeue_ts,
                Detection.infer_end_ts - Detection.infer_start_ts,
                Detection.sink_ts - Detection.infer_end_ts,
            ).where(Detection.status == "ok")
        ).all()
        last_row = (
            select(Detection.camera_id, Detection.part_id, func.max(Detection.sink_ts).label("ts"))
            .group_by(Detection.camera_id, Detection.part_id)
            .subquery()
        )
        to_verdict = session.scalars(
            select(Part.decided_ts - last_row.c.ts).join(
                last_row,
                (last_row.c.camera_id == Part.camera_id) & (last_row.c.part_id == Part.part_id),
            )
        ).all()
    engine.dispose()
    if not rows:
        return "n/a"
    medians = list(np.median(np.array(rows, dtype=np.float64), axis=0) / 1e6)
    medians.append(float(np.median(to_verdict)) / 1e6 if to_verdict else float("nan"))
    return " / ".join(f"{m:.0f}" for m in medians) + " ms"


def percentiles(values_ns: list[int], points: tuple[int, ...] = (50, 95, 99)) -> str:
    if not values_ns:
        return "n/a"
    values = np.percentile(np.array(values_ns, np.float64) / 1e6, points)
    return " / ".join(f"{v:.0f}" for v in values) + " ms"


@dataclass
class ProcessSamples:
    role: str
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, MB)
    cpu_s: float = 0.0  # user + system, last seen


class ProcessSampler:
    """RSS and CPU time of this process's children (the line's workers and Redis), per
    process, every `every_s`. Roles come from the workers' heartbeats."""

    def __init__(self, *, redis_url: str, line: str, every_s: float) -> None:
        self.client = broker.connect(redis_url)
        self.line, self.every_s = line, every_s
        self.processes: dict[int, ProcessSamples] = {}
        self.totals: list[tuple[float, dict[str, float]]] = []  # (s since start, MB per role)
        self._started = time.monotonic()
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        """CPU time every second at most (a worker's last figure is the one before it
        ends); RSS points every `every_s`."""
        due = 0.0
        while True:
            keep = time.monotonic() >= due
            if keep:
                due = time.monotonic() + self.every_s
            self._sample(keep_rss=keep)
            if self._stop.wait(min(1.0, self.every_s)):
                return

    def _sample(self, keep_rss: bool) -> None:
        for key in broker.live_keys(self.client, f"lw:worker:{self.line}:*"):
            fields = self.client.hgetall(key)
            if b"pid" in fields:  # a key can expire between SCAN and HGETALL
                self._roles[int(fields[b"pid"])] = fields.get(b"role", b"?").decode()
        tick: dict[str, float] = {}
        for pid in _children(os.getpid()):
            if _is_resource_tracker(pid):  # multiprocessing's helper, not a worker
                continue
            stat = _stat(pid)
            if stat is None:
                continue
            comm, cpu_s, rss_mb = stat
            role = "redis" if "redis" in comm else self._roles.get(pid, "ingest")
            samples = self.processes.setdefault(pid, ProcessSamples(role))
            samples.role = role
            samples.cpu_s = cpu_s
            if keep_rss:
                samples.rss_mb.append((time.monotonic(), rss_mb))
                tick[role] = tick.get(role, 0.0) + rss_mb
        if keep_rss:
            self.totals.append((time.monotonic() - self._started, tick))

    def total_at(self, role: str, second: float) -> float:
        """The role's RSS (MB, all its processes) in the first sample at or after `second`."""
        later = [tick.get(role, 0.0) for at, tick in self.totals if at >= second]
        return later[0] if later else float("nan")

    def cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for samples in self.processes.values():
            totals[samples.role] = totals.get(samples.role, 0.0) + samples.cpu_s
        return totals

    def peak_by_role(self) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for s in self.processes.values():
            if s.rss_mb:
                peaks[s.role] = max(peaks.get(s.role, 0.0), max(mb for _, mb in s.rss_mb))
        return peaks

    def growth_per_hour(self, role: str, skip_s: float) -> float:
        """Worst relative RSS growth per hour among `role`'s processes (linear fit after
        the first `skip_s`: start-up and warm-up are not growth)."""
        fits = [
            _growth(s.rss_mb, skip_s)
            for s in self.processes.values()
            if s.role == role and s.rss_mb
        ]
        fits = [g for g in fits if g == g]
        return max(fits) if fits else float("nan")


def _growth(rows: list[tuple[float, float]], skip_s: float) -> float:
    t0 = rows[0][0]
    steady = [(t - t0, mb) for t, mb in rows if t - t0 >= skip_s]
    if len(steady) < 3:
        return float("nan")
    times, mbs = np.array(steady).T
    return float(np.polyfit(times, mbs, 1)[0] * 3600 / mbs[0])


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _is_resource_tracker(pid: int) -> bool:
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, float, float] | None:
    """(command name, CPU seconds, RSS MB) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    rss_kb = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
    return comm, cpu_s, rss_kb / 1024
