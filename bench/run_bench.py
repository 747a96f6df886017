"""The linewatch benchmark suite: every stage alone, then the whole line, in one run.

    python bench/run_bench.py                 # full suite, 10-minute soak
    python bench/run_bench.py --soak-s 120    # shorter soak

Prints a table and writes bench/RESULTS.md (figures + the machine they came from).
All stages run on the same simulated line video, side by side in one process.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linewatch.line import run_line
from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.runtime import setup_logging
from linewatch.pipeline.simulation.simulator import LineSpec, simulate
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis
from linewatch.pipeline.video.codec import encode_image
from linewatch.pipeline.video.source import SourceOptions, open_frames
from linewatch.schemas.messages import FrameMessage, ResultMessage

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        print(f"{name:<58} {value}", flush=True)
        self.rows.append((name, value))


def rate(count: int, call: Callable[[], object], repeats: int = 3) -> float:
    """Items per second of `call` (best of `repeats`: the machine is shared and noisy)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return count / best


def percentiles(values_ns: list[int]) -> str:
    if not values_ns:
        return "n/a"
    p50, p95, p99 = np.percentile(np.array(values_ns) / 1e6, [50, 95, 99])
    return f"{p50:.0f} / {p95:.0f} / {p99:.0f} ms"


def stage_figures(report: Report, video: Path, redis_url: str, work: Path) -> dict[str, float]:
    frames = [f.image for f in open_frames(str(video), SourceOptions())]
    count = len(frames)
    stages = {"decode": rate(count, lambda: list(open_frames(str(video), SourceOptions())))}
    report.add("decode only (PyAV, threads auto), frames/s", f"{stages['decode']:.0f}")

    client = broker.connect(redis_url)
    messages = lambda: [  # noqa: E731
        FrameMessage(
            "bench", i, i / 10, 0, 0, 256, 256, "jpeg", encode_image(f, "jpeg"), False
        ).encode()
        for i, f in enumerate(frames)
    ]
    stages["transport"] = rate(count, lambda: _xadd(client, messages(), 16))
    single = rate(count, lambda: _xadd(client, messages(), 1))
    report.add("JPEG encode + XADD, batches of 16, msgs/s", f"{stages['transport']:.0f}")
    report.add("JPEG encode + XADD, one round trip per frame, msgs/s", f"{single:.0f}")

    classifier = Classifier(Path(load_settings(environ={}).inference.model_dir), max_batch=32)
    classifier.warm_up()
    for size in (1, 8, 32):
        batch, repeats = frames[:size], 32 // size
        per_s = rate(
            size * repeats, lambda b=batch, n=repeats: [classifier.predict(b) for _ in range(n)]
        )
        stages[f"infer{size}"] = per_s
        report.add(f"inference (preprocess + predictor) batch {size}, img/s", f"{per_s:.0f}")
    report.add(
        "batched inference gain (batch 32 / batch 1)",
        f"{stages['infer32'] / stages['infer1']:.1f}x",
    )

    engine = storage.open_database(f"sqlite:///{work / 'sink-bench.db'}")
    results = [_result(i) for i in range(2048)]
    offset = iter(range(0, 10**9, 10_000))
    stages["sink"] = rate(len(results), lambda: _write(engine, results, next(offset)))
    report.add("sink: SQLite insert batches of 256, rows/s", f"{stages['sink']:.0f}")
    return stages


def _xadd(client: broker.Client, entries: list, batch: int) -> None:
    for start in range(0, len(entries), batch):
        broker.add_entries(client, "lw:bench", entries[start : start + batch], maxlen=1000)


def _result(seq: int) -> ResultMessage:
    return ResultMessage(
        "bench",
        seq,
        seq / 10,
        "ok",
        "m",
        "v",
        "free",
        0.9,
        (("free", 0.9),),
        False,
        0,
        0,
        0,
        0,
        0,
        "w",
    )


def _write(engine, results: list[ResultMessage], offset: int) -> None:  # type: ignore[no-untyped-def]
    shifted = [ResultMessage(**{**r.__dict__, "seq": r.seq + offset}) for r in results]
    for start in range(0, len(shifted), 256):
        storage.write_batch(engine, shifted[start : start + 256], [], time.time_ns())


def line_settings(work: Path, name: str, redis_url: str, cameras: list[dict]) -> Settings:
    """Bench defaults; LINEWATCH_* variables tune the rest (e.g. LINEWATCH_INFERENCE__THREADS)."""
    return load_settings(
        environ=None,
        overrides={
            "line": name,
            "redis_url": redis_url,
            "data_dir": str(work),
            "database_url": f"sqlite:///{work / (name + '.db')}",
            "cameras": cameras,
        },
    )


def latencies(settings: Settings) -> tuple[list[int], list[int], list[float]]:
    """capture->result and capture->alert (ns), and the achieved frames/s of each camera."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from linewatch.schemas.tables import Alert, Detection

    engine = storage.open_database(settings.resolved_database_url())
    with Session(engine) as session:
        result = session.scalars(select(Detection.sink_ts - Detection.capture_ts)).all()
        alert = session.scalars(select(Alert.raised_ts - Alert.opened_ts)).all()
        spans = session.execute(
            select(func.count(), func.min(Detection.capture_ts), func.max(Detection.capture_ts))
            .where(Detection.status == "ok")
            .group_by(Detection.camera_id)
        ).all()
    engine.dispose()
    fps = [(n - 1) / ((last - first) / 1e9) for n, first, last in spans if n > 1 and last > first]
    return list(result), list(alert), fps


def stage_medians(settings: Settings) -> str:
    """Median ms per hop of a frame: capture->ingest, queue, batch wait, infer, to SQL."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from linewatch.schemas.tables import Detection

    engine = storage.open_database(settings.resolved_database_url())
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
    engine.dispose()
    if not rows:
        return "n/a"
    medians = np.median(np.array(rows, dtype=np.float64), axis=0) / 1e6
    return " / ".join(f"{m:.0f}" for m in medians) + " ms"


def steady_percentiles(settings: Settings, skip_s: float = 10.0) -> str:
    """capture->result percentiles without each camera's first `skip_s` (process start-up)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from linewatch.schemas.tables import Detection

    engine = storage.open_database(settings.resolved_database_url())
    with Session(engine) as session:
        first = (
            select(Detection.camera_id, func.min(Detection.capture_ts).label("start"))
            .group_by(Detection.camera_id)
            .subquery()
        )
        values = session.scalars(
            select(Detection.sink_ts - Detection.capture_ts)
            .join(first, first.c.camera_id == Detection.camera_id)
            .where(Detection.capture_ts >= first.c.start + int(skip_s * 1e9))
        ).all()
    engine.dispose()
    return percentiles(list(values))


def e2e_figures(
    report: Report, stages: dict[str, float], video: Path, redis_url: str, work: Path
) -> None:
    settings = line_settings(work, "e2e", redis_url, [{"id": "cam1", "url": str(video)}])
    stats = run_line(settings)
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from linewatch.schemas.tables import Detection

    engine = storage.open_database(settings.resolved_database_url())
    with Session(engine) as session:
        first, last = session.execute(
            select(func.min(Detection.capture_ts), func.max(Detection.sink_ts))
        ).one()
    e2e = stats.written / ((last - first) / 1e9)
    slowest_name = min(("decode", "transport", "infer32", "sink"), key=lambda k: stages[k])
    report.add("end to end, one file, frames/s (first capture -> last write)", f"{e2e:.0f}")
    report.add(f"e2e / slowest single stage ({slowest_name})", f"{e2e / stages[slowest_name]:.2f}")


class RssSampler:
    """Resident memory of this process's children (the line's workers), per process."""

    def __init__(self, redis_url: str, line: str, every_s: float = 2.0) -> None:
        self.client = broker.connect(redis_url)
        self.line, self.every_s = line, every_s
        self.samples: dict[int, list[tuple[float, float]]] = {}
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for key in broker.live_keys(self.client, f"lw:worker:{self.line}:*"):
                fields = self.client.hgetall(key)
                if b"pid" in fields:  # a key can expire between SCAN and HGETALL
                    self.roles[int(fields[b"pid"])] = fields.get(b"role", b"?").decode()
            for pid in _children(os.getpid()):
                comm = Path(f"/proc/{pid}/comm")
                if pid not in self.roles and comm.exists() and "redis" in comm.read_text():
                    self.roles[pid] = "redis"
                self.samples.setdefault(pid, []).append((time.monotonic(), _rss_mb(pid)))

    def _by_role(self) -> dict[str, list[list[tuple[float, float]]]]:
        """Samples per role; a worker counts as its role from its first sample on, even
        before its first heartbeat (while it loads the model)."""
        grouped: dict[str, list[list[tuple[float, float]]]] = {}
        for pid, rows in self.samples.items():
            grouped.setdefault(self.roles.get(pid, "ingest"), []).append(rows)
        return grouped

    def peak(self) -> dict[str, float]:
        runs = self._by_role()
        return {role: max(mb for rows in runs[role] for _, mb in rows) for role in runs}

    def growth_per_hour(self, role: str) -> float:
        """Worst relative RSS growth per hour among `role`'s processes (fit after 60 s)."""
        growths = [_growth(rows) for rows in self._by_role().get(role, [])]
        growths = [g for g in growths if g == g]
        return max(growths) if growths else float("nan")


def _growth(rows: list[tuple[float, float]]) -> float:
    t0 = rows[0][0]
    steady = [(t - t0, mb) for t, mb in rows if t - t0 > 60]
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


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def camera_run(
    report: Report, cameras: int, seconds: float, redis_url: str, work: Path, label: str
) -> RssSampler:
    """`cameras` live cameras at 5 fps (real-time replays of simulated lines)."""
    parts = int(seconds * 5 / 8) + 1
    videos = simulate(work / f"cams{cameras}", LineSpec(parts=parts, fps=5, seed=cameras), cameras)
    name = f"{label}{cameras}"
    settings = line_settings(
        work,
        name,
        redis_url,
        [
            {"id": f"cam{i + 1}", "url": str(video), "realtime": True}
            for i, (video, _) in enumerate(videos)
        ],
    )
    with RssSampler(redis_url, name) as sampler:
        stats = run_line(settings)
    result_ns, alert_ns, fps = latencies(settings)
    report.add(
        f"{cameras} live cameras @ 5 fps: inferred fps per camera (min / mean)",
        f"{min(fps, default=0):.2f} / {np.mean(fps) if fps else 0:.2f}",
    )
    report.add(f"{cameras} cameras: capture->result p50/p95/p99", percentiles(result_ns))
    report.add(
        f"{cameras} cameras: capture->result p50/p95/p99 after the first 10 s",
        steady_percentiles(settings),
    )
    report.add(
        f"{cameras} cameras: median ms capture->ingest / queue / batch wait / infer / to SQL",
        stage_medians(settings),
    )
    report.add(f"{cameras} cameras: capture->alert p50/p95/p99", percentiles(alert_ns))
    report.add(f"{cameras} cameras: dropped / stale frames", f"{stats.dropped} / {stats.stale}")
    return sampler


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def write_results(report: Report, path: Path, args: argparse.Namespace) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}  ",
        f"Run: `python bench/run_bench.py --soak-s {args.soak_s:.0f}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        "Model: the shipped `models/linewatch-tile` on CPU (oneDNN, 2 threads).",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in report.rows),
        "",
    ]
    extra = (
        path.read_text().split("<!-- more -->", 1)[1]
        if path.exists() and "<!-- more -->" in path.read_text()
        else ""
    )
    path.write_text("\n".join(lines) + "<!-- more -->" + extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--camera-run-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("LINEWATCH_LOG_LEVEL", "WARNING")
    setup_logging("bench")
    report = Report()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        work = Path(tmp)
        ((video, _),) = simulate(work / "line", LineSpec(parts=60, frames_per_part=8, fps=10))
        stages = stage_figures(report, video, redis.url, work)
        e2e_figures(report, stages, video, redis.url, work)
        for cameras in (1, 8, 30):
            camera_run(report, cameras, args.camera_run_s, redis.url, work, "scale")
        soak = camera_run(report, 8, args.soak_s, redis.url, work, "soak")
        for role, mb in sorted(soak.peak().items()):
            report.add(f"soak ({args.soak_s:.0f} s, 8 cameras): peak RSS {role}", f"{mb:.0f} MB")
            report.add(f"soak: RSS growth per hour, {role}", f"{soak.growth_per_hour(role):+.1%}")
    write_results(report, args.out, args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
