"""Ingest cost at 1/8/30 paced cameras: one process per camera vs several per process.

    python bench/ingest_bench.py [--cameras 1,8,30] [--seconds 20] [--per-process 8]
                                 [--source-fps 10] [--fps 5] [--out bench/RESULTS.md]
    python bench/ingest_bench.py --preview-cost --cameras 8     # live view on vs off

Each camera replays the same moving-line video (640x480 H.264, parts mode `contrast`) at
its frame rate (`realtime: true`, a live camera as far as ingest can tell), sampled to
`--fps`. The real `linewatch worker ingest` processes run, grouped as `linewatch run`
groups them (`ingest.cameras_per_process` 1, then `--per-process`), side by side for
each camera count; a drain empties the streams so no view is shed. Measured over the
steady `--seconds` (after every camera sent its first frame): CPU seconds of the ingest
processes per camera-second and per sampled frame, sampled frames per second against
the cameras' due rate, the processes' summed RSS, each view's capture (its release by
the pacing) to its entry in Redis (p50 / p99), and apart their CPU seconds from
spawn until every camera streams (+ 2 s). A last line decodes the video with and
without `skip_frame = NONREF` (PyAV). Writes its section of bench/RESULTS.md between
the `<!-- ingest-bench -->` markers. `--preview-cost` instead runs each camera count grouped,
with the live view off (`ingest.preview_fps: 0`) and at its default, side by side, and
prints the CPU the live view costs (nothing is written).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import av
import psutil
import yaml
from results_md import write_section

from linewatch.line import ingest_groups
from linewatch.pipeline import keys
from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"method": "contrast"}
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class Figures:
    cameras: int
    per_process: int
    processes: int
    start_cpu_s: float
    cpu_per_camera_s: float
    frames_per_s: float
    due_per_s: float
    dropped: int
    rss_mb: float
    in_redis_p50_ms: float  # a view's capture to its entry in Redis: locate, crop, JPEG, XADD
    in_redis_p99_ms: float

    @property
    def cpu_ms_per_frame(self) -> float:
        """Fair when the cores cannot keep up (fewer frames, less CPU per camera-second)."""
        return 1000 * self.cpu_per_camera_s * self.cameras / self.frames_per_s


def make_video(folder: Path, seconds: float, fps: float) -> Path:
    """A moving line lasting at least `seconds` (parts take ~2 s to cross)."""
    parts = int(seconds / 1.6) + 4
    spec = MovingLineSpec(width=640, height=480, fps=fps, frames_to_cross=int(2 * fps), parts=parts)
    ((video, _, _),) = simulate_moving(folder, spec)
    return video


def line_config(
    *,
    video: Path,
    cameras: int,
    per_process: int,
    fps: float,
    redis_url: str,
    line: str,
    preview_fps: float | None = None,
) -> dict[str, object]:
    camera = {"url": str(video), "realtime": True, "fps": fps, "parts": PARTS}
    ingest: dict[str, object] = {"cameras_per_process": per_process}
    if preview_fps is not None:
        ingest["preview_fps"] = preview_fps
    return {
        "line": line,
        "redis_url": redis_url,
        "cameras": [{"id": f"cam{i}", **camera} for i in range(cameras)],
        "ingest": ingest,
    }


class Drain:
    """Empties the line's streams while the bench runs (no backlog, so nothing is shed),
    noting each view's capture to arrival in Redis."""

    def __init__(self, client: broker.Client, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.recording = False  # latencies are kept only over the measured window
        self.latencies_ms: list[float] = []

    def __enter__(self) -> Drain:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            entries = self.client.xrange(self.settings.frames_stream, count=5000)
            if entries:
                self.client.xdel(
                    self.settings.frames_stream, *(entry_id for entry_id, _ in entries)
                )
            if self.recording:
                self.latencies_ms += [
                    _in_redis_ms(entry_id, fields) for entry_id, fields in entries
                ]
            self.client.xtrim(self.settings.results_stream, maxlen=0)


def _in_redis_ms(entry_id: bytes, fields: dict[bytes, bytes]) -> float:
    """Capture to the entry's arrival in Redis (its id is the server's clock, in ms)."""
    return int(entry_id.split(b"-")[0]) - int(fields[b"capture_ts"]) / 1e6


def counters(client: broker.Client, settings: Settings) -> tuple[int, int, int]:
    """(cameras that sent a frame, frames sampled, frames dropped) over the line's cameras."""
    started = decoded = dropped = 0
    for camera in settings.cameras:
        values = client.hgetall(settings.camera_key(camera.id, keys.INGEST))
        seen = int(values.get(b"decoded", 0))
        started += seen > 0
        decoded += seen
        dropped += int(values.get(b"dropped", 0))
    return started, decoded, dropped


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
    return total


def measure(client: broker.Client, settings: Settings, config: Path, seconds: float) -> Figures:
    groups = ingest_groups(settings)
    command = [sys.executable, "-m", "linewatch.cli", "worker", "ingest", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env["LINEWATCH_LOG_LEVEL"] = "WARNING"
    popens = [
        subprocess.Popen([*command, "--camera", ids], env=env, stderr=subprocess.DEVNULL)
        for ids, _ in groups
    ]
    processes = [psutil.Process(p.pid) for p in popens]
    try:
        with Drain(client, settings) as drain:
            deadline = time.monotonic() + START_TIMEOUT_S
            while counters(client, settings)[0] < len(settings.cameras):
                if time.monotonic() > deadline or any(p.poll() is not None for p in popens):
                    raise SystemExit("ingest did not start every camera; see its logs")
                time.sleep(0.2)
            time.sleep(2.0)  # past the first frames' start-up work
            cpu0, (_, decoded0, dropped0), t0 = (
                cpu_seconds(processes),
                counters(client, settings),
                time.monotonic(),
            )
            drain.recording = True
            time.sleep(seconds)
            drain.recording = False
            cpu1, (_, decoded1, dropped1), t1 = (
                cpu_seconds(processes),
                counters(client, settings),
                time.monotonic(),
            )
            rss = sum(p.memory_info().rss for p in processes) / 2**20
    finally:
        for popen in popens:
            popen.terminate()
        for popen in popens:
            popen.wait(60)
    cameras = len(settings.cameras)
    wall = t1 - t0
    return Figures(
        cameras=cameras,
        per_process=settings.ingest.cameras_per_process,
        processes=len(groups),
        start_cpu_s=cpu0,
        cpu_per_camera_s=(cpu1 - cpu0) / (cameras * wall),
        frames_per_s=(decoded1 - decoded0) / wall,
        due_per_s=cameras * (settings.cameras[0].fps or 0),
        dropped=dropped1 - dropped0,
        rss_mb=rss,
        in_redis_p50_ms=percentile(drain.latencies_ms, 50),
        in_redis_p99_ms=percentile(drain.latencies_ms, 99),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def decode_cost(video: Path, skip: str, repeats: int = 3) -> tuple[int, float]:
    """(frames decoded, best CPU ms per source frame) with PyAV's skip_frame `skip`."""
    best, decoded = float("inf"), 0
    for _ in range(repeats):
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = skip
            total = stream.frames
            start = time.process_time()
            decoded = sum(1 for _ in container.decode(stream))
            best = min(best, (time.process_time() - start) * 1000 / total)
    return decoded, best


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def markdown(
    rows: list[Figures],
    decode: dict[str, tuple[int, float]],
    args: argparse.Namespace,
    context: dict[str, str],
) -> str:
    lines = [
        "## Ingest",
        "",
        f"Run: `python bench/ingest_bench.py --cameras {args.cameras} --seconds {args.seconds:g} "
        f"--per-process {args.per_process} --source-fps {args.source_fps:g} --fps {args.fps:g}` "
        f"on {context['date']}, {context['machine']}, load average {context['load_start']} at "
        f"start, {context['load_end']} at the end (the cores are shared with other work). Each "
        f"camera replays a 640x480 H.264 moving line at {args.source_fps:g} fps in real time, "
        f"sampled to {args.fps:g} fps, parts mode `contrast`; figures over {args.seconds:g} s "
        "of steady streaming.",
        "",
        "| cameras | per process | processes | CPU s until all stream "
        "| CPU s per camera-second | CPU ms per sampled frame "
        "| sampled frames/s (due) | dropped | RSS, all processes | capture → in Redis p50 / p99 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.cameras} | {row.per_process} | {row.processes} | {row.start_cpu_s:.1f} "
            f"| {row.cpu_per_camera_s:.3f} | {row.cpu_ms_per_frame:.1f} "
            f"| {row.frames_per_s:.1f} ({row.due_per_s:g}) | {row.dropped} | {row.rss_mb:.0f} MB "
            f"| {row.in_redis_p50_ms:.0f} / {row.in_redis_p99_ms:.0f} ms |"
        )
    lines += [
        "",
        "| cameras | CPU per sampled frame, one process per camera / grouped | RSS ratio |",
        "|---|---|---|",
    ]
    for one, grouped in pairs(rows):
        lines.append(
            f"| {one.cameras} | {one.cpu_ms_per_frame / grouped.cpu_ms_per_frame:.2f} x "
            f"| {one.rss_mb / grouped.rss_mb:.2f} x |"
        )
    (n_default, ms_default), (n_skip, ms_skip) = decode["DEFAULT"], decode["NONREF"]
    lines += [
        "",
        f"Decoding the bench video alone (best of 3, CPU ms per source frame): all frames "
        f"{ms_default:.2f} ms ({n_default} frames); `skip_frame = NONREF` {ms_skip:.2f} ms "
        f"({n_skip} frames decoded), {ms_default / ms_skip:.2f} x.",
    ]
    return "\n".join(lines)


def pairs(rows: list[Figures]) -> list[tuple[Figures, Figures]]:
    one = {r.cameras: r for r in rows if r.per_process == 1}
    grouped = {r.cameras: r for r in rows if r.per_process != 1}
    return [(one[n], grouped[n]) for n in one if n in grouped]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", default="1,8,30")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-process", type=int, default=8)
    parser.add_argument("--source-fps", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--preview-cost", action="store_true", help="live view on vs off")
    args = parser.parse_args()
    if args.preview_cost:
        preview_cost(args)
        return
    counts = [int(n) for n in args.cameras.split(",")]
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_start": f"{os.getloadavg()[0]:.1f}",
    }
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        folder = Path(tmp)
        video = make_video(folder / "video", args.seconds + 90, args.source_fps)
        client = broker.connect(redis.url)
        for count in counts:
            for per_process in (1, args.per_process):
                line = f"ingest-bench-{count}-{per_process}"
                data = line_config(
                    video=video,
                    cameras=count,
                    per_process=per_process,
                    fps=args.fps,
                    redis_url=redis.url,
                    line=line,
                )
                config = folder / f"{line}.yaml"
                config.write_text(yaml.safe_dump(data))
                settings = load_settings(config, environ={})
                figures = measure(client, settings, config, args.seconds)
                print(figures, flush=True)
                rows.append(figures)
        decode = {skip: decode_cost(video, skip) for skip in ("DEFAULT", "NONREF")}
    context["load_end"] = f"{os.getloadavg()[0]:.1f}"
    text = markdown(rows, decode, args, context)
    print(text)
    write_section(args.out, name="ingest-bench", body=text, before="api-bench")


def preview_cost(args: argparse.Namespace, repeats: int = 3) -> None:
    """Each camera count grouped, live view off then at its default, alternating
    `repeats` times; the least CPU of each (the machine is shared and noisy)."""
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        folder = Path(tmp)
        video = make_video(folder / "video", args.seconds + 90, args.source_fps)
        client = broker.connect(redis.url)
        for count in (int(n) for n in args.cameras.split(",")):
            cpu: dict[str, list[float]] = {"off": [], "on": []}
            for run, mode in enumerate(["off", "on"] * repeats):
                line = f"preview-bench-{count}-{mode}-{run}"
                data = line_config(
                    video=video,
                    cameras=count,
                    per_process=args.per_process,
                    fps=args.fps,
                    redis_url=redis.url,
                    line=line,
                    preview_fps=0.0 if mode == "off" else None,
                )
                config = folder / f"{line}.yaml"
                config.write_text(yaml.safe_dump(data))
                figures = measure(client, load_settings(config, environ={}), config, args.seconds)
                cpu[mode].append(figures.cpu_per_camera_s)
                print(mode, figures, flush=True)
            off, on = min(cpu["off"]), min(cpu["on"])
            print(
                f"{count} cameras: ingest CPU per camera-second {off:.4f} s without the live "
                f"view, {on:.4f} s with it ({100 * (on - off) / off:+.1f} %), least of {repeats}"
            )


if __name__ == "__main__":
    main()
