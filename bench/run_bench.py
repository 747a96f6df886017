"""The linewatch benchmark suite, parts mode: stages alone, the line against hand-written
loops side by side, 1 / 8 / 30 live cameras, and a soak, in one run.

    python bench/run_bench.py                 # full suite, 1-hour soak
    python bench/run_bench.py --soak-s 60     # development run

Prints each figure and writes the top of bench/RESULTS.md (command, machine, date, load
average); the sections after `<!-- more -->` (API, report benchmarks) are kept.
`LINEWATCH_PROFILE_DIR=dir` makes every worker write a cProfile dump there.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from line_figures import (  # noqa: E402
    HOPS,
    ProcessSampler,
    hop_medians,
    part_figures,
    percentiles,
)
from loops import run_loop  # noqa: E402

from linewatch.line import run_line  # noqa: E402
from linewatch.pipeline.config import ContrastParts, Settings, load_settings  # noqa: E402
from linewatch.pipeline.inference.classifier import Classifier  # noqa: E402
from linewatch.pipeline.runtime import setup_logging  # noqa: E402
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving  # noqa: E402
from linewatch.pipeline.storage import database as storage  # noqa: E402
from linewatch.pipeline.streams import broker  # noqa: E402
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis  # noqa: E402
from linewatch.pipeline.video.codec import decode_image, encode_image  # noqa: E402
from linewatch.pipeline.video.parts import make_frame_views  # noqa: E402
from linewatch.pipeline.video.source import SourceOptions, open_frames  # noqa: E402
from linewatch.schemas.messages import FrameMessage, PartView, ResultMessage  # noqa: E402
from linewatch.workers.ingest import model_view  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "linewatch-tile"
PARTS = {"method": "contrast", "merge_gap": 64}  # the simulator keeps parts 96 px apart
NO_DEADLINE = {"deadline_ms": 3_600_000}  # files run faster than real time
SOAK_SAMPLE_S = 60.0
MORE = "<!-- more -->"  # RESULTS.md below this line is kept: notes, API and report benches
BASE_VIDEOS = 10  # distinct simulated lines; longer sources loop over them (ffconcat)
BASE_PARTS = 25  # parts per base video (~80 s at 5 fps)
BASE_MIN_S = 75.0  # s: every base video is at least this long


def base_videos(folder: Path) -> list[Path]:
    """Distinct moving lines at 5 fps (`linewatch simulate` procedural tiles, 640x480);
    those already in `folder` are reused."""
    videos = []
    for i in range(BASE_VIDEOS):
        video = folder / f"base{i}" / "cam1.mp4"
        if not video.exists():
            spec = MovingLineSpec(parts=BASE_PARTS, fps=5, seed=100 + i)
            simulate_moving(video.parent, spec)
        videos.append(video)
    return videos


def looped(bases: list[Path], *, first: int, seconds: float, name: str) -> Path:
    """A source of about `seconds` that plays the bases from `first` on, round and round
    (FFmpeg's concat demuxer: pts run on across the joins); cameras starting on different
    bases show different parts at the same time."""
    count = max(1, int(np.ceil(seconds / BASE_MIN_S)))
    folder = bases[0].parent.parent  # FFmpeg takes only relative paths below the list
    lines = [f"file {bases[(first + i) % len(bases)].relative_to(folder)}" for i in range(count)]
    lines.append(f"outpoint {seconds - (count - 1) * BASE_MIN_S:.1f}")
    out = folder / f"{name}.ffconcat"
    out.write_text("ffconcat version 1.0\n" + "\n".join(lines) + "\n")
    return out


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (section, name, value)
    section: str = ""

    def add(self, name: str, value: str) -> None:
        print(f"{name:<66} {value}", flush=True)
        self.rows.append((self.section, name, value))


def rate(count: int, call: Callable[[], object], repeats: int = 3) -> float:
    """Items per second of `call` (best of `repeats`: the machine is shared and noisy)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return count / best


def line_settings(
    work: Path, name: str, redis_url: str, cameras: list[dict], verdict: dict | None = None
) -> Settings:
    """Bench defaults; LINEWATCH_* variables tune the rest (e.g. LINEWATCH_INFERENCE__THREADS)."""
    return load_settings(
        environ=None,
        overrides={
            "line": name,
            "redis_url": redis_url,
            "data_dir": str(work),
            "database_url": f"sqlite:///{work / (name + '.db')}",
            "cameras": [{**camera, "parts": PARTS} for camera in cameras],
            "verdict": verdict or {},
        },
    )


def stage_figures(report: Report, video: Path, redis_url: str, work: Path) -> None:
    """Each stage alone, in parts terms: views are crops at the model's input size."""
    report.section = "Stages alone (parts mode: views are crops at the model's input size)"
    frames = list(open_frames(str(video), SourceOptions()))
    decode = rate(len(frames), lambda: sum(1 for _ in open_frames(str(video), SourceOptions())))
    report.add(
        f"decode (PyAV, {frames[0].image.shape[1]}x{frames[0].image.shape[0]}), frames/s",
        f"{decode:.0f}",
    )
    view = model_view(MODEL_DIR, "bench")
    crops: list[np.ndarray] = []

    def locate_track_crop() -> None:
        views = make_frame_views(
            ContrastParts(**PARTS),
            camera_id="b",
            model_view=lambda: view,
            new_part_ids=lambda count: 1,
        )
        crops.clear()
        for frame in frames:
            crops.extend(views.image(pick) for pick in views.select([frame]).picks)

    per_frame = rate(len(frames), locate_track_crop)
    report.add("locate + track + crop views, frames/s (one thread)", f"{per_frame:.0f}")
    report.add("views per frame on this line", f"{len(crops) / len(frames):.2f}")
    jpegs = [encode_image(crop, "jpeg") for crop in crops]
    client = broker.connect(redis_url)

    def messages() -> list:
        return [
            FrameMessage(
                "bench",
                i,
                i / 10,
                0,
                0,
                view.size[0],
                view.size[1],
                "jpeg",
                encode_image(crop, "jpeg"),
                False,
                view=PartView(i, 0, 0, 0, 1, 1),
            ).encode()
            for i, crop in enumerate(crops)
        ]

    for batch in (16, 1):
        per_s = rate(len(crops), lambda b=batch: _xadd(client, messages(), b))
        report.add(f"view JPEG encode + XADD, {batch} per round trip, msgs/s", f"{per_s:.0f}")
    classifier = Classifier(MODEL_DIR, max_batch=32)
    classifier.warm_up()
    size = view.size
    for batch in (1, 8, 32):
        chunk = jpegs[:batch]
        per_s = rate(
            batch * (64 // batch),
            lambda c=chunk, n=64 // batch: [
                classifier.predict([decode_image(j, "jpeg", *size) for j in c]) for _ in range(n)
            ],
        )
        report.add(
            f"inference (JPEG decode + preprocess + predictor) batch {batch}, views/s",
            f"{per_s:.0f}",
        )
    tensor = classifier.preprocessor.batch([decode_image(j, "jpeg", *size) for j in jpegs[:32]])
    alone = rate(32 * 2, lambda: [classifier.infer(tensor) for _ in range(2)])
    report.add("predictor alone, batch 32, views/s", f"{alone:.0f}")
    engine = storage.open_database(f"sqlite:///{work / 'sink-bench.db'}")
    results = [_result(i, jpegs[0]) for i in range(2048)]
    offset = iter(range(0, 10**9, 10_000))
    sink = rate(len(results), lambda: _write(engine, results, next(offset)))
    report.add("sink: SQLite view rows (part views), batches of 256, rows/s", f"{sink:.0f}")
    engine.dispose()


def _xadd(client: broker.Client, entries: list, batch: int) -> None:
    for start in range(0, len(entries), batch):
        broker.add_to_streams(client, [("lw:bench", entries[start : start + batch], 1000)])


def _result(seq: int, evidence: bytes) -> ResultMessage:
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
        evidence=evidence if seq % 5 == 0 else b"",
        view=PartView(seq // 4, seq % 4, 10, 10, 200, 200),
    )


def _write(engine, results: list[ResultMessage], offset: int) -> None:  # type: ignore[no-untyped-def]
    shifted = [ResultMessage(**{**r.__dict__, "seq": r.seq + offset}) for r in results]
    for start in range(0, len(shifted), 256):
        storage.write_batch(engine, shifted[start : start + 256], time.time_ns())


def line_once(video: Path, redis_url: str, work: Path, name: str):  # type: ignore[no-untyped-def]
    """One `linewatch run` of the video: its figures, settings, CPU s per role, wall s."""
    settings = line_settings(
        work, name, redis_url, [{"id": "cam1", "url": str(video)}], NO_DEADLINE
    )
    with ProcessSampler(redis_url=redis_url, line=name, every_s=0.2) as sampler:
        started = time.perf_counter()
        run_line(settings)
        wall = time.perf_counter() - started
    return part_figures(settings, live=False), settings, sampler.cpu_by_role(), wall


def side_by_side(report: Report, video: Path, redis_url: str, work: Path, rounds: int) -> None:
    """The line, the batched single process and the naive loop on the same video, in
    turn, `rounds` times: each is given its best round (the machine is shared)."""
    report.section = "Parts-mode line against hand-written loops (same video, same model, one run)"
    classifier = Classifier(MODEL_DIR, max_batch=32)
    classifier.warm_up()
    loop = {
        "classifier": classifier,
        "parts": ContrastParts(**PARTS),
        "view": model_view(MODEL_DIR, "b"),
    }
    lines, batches, naives = [], [], []
    for round_ in range(rounds):
        lines.append(line_once(video, redis_url, work, f"e2e{round_}"))
        batches.append(run_loop(video, db=work / "batched.db", batch_size=32, **loop))
        naives.append(run_loop(video, db=work / "naive.db", batch_size=1, **loop))
    report.add(
        "parts/s per round: line / single process / naive loop",
        "; ".join(
            f"{a[0].parts_per_s:.1f} / {b.parts_per_s:.1f} / {c.parts_per_s:.1f}"
            for a, b, c in zip(lines, batches, naives, strict=True)
        ),
    )
    line, settings, cpu, wall = max(lines, key=lambda run: run[0].parts_per_s)
    batched = max(batches, key=lambda run: run.parts_per_s)
    naive = max(naives, key=lambda run: run.parts_per_s)
    for name, figures in (
        ("`linewatch run` (ingest, inference, sink processes)", line),
        ("hand-written single process, batch 32, executemany", batched),
        ("naive loop, one view at a time, commit per row", naive),
    ):
        report.add(
            f"{name}: parts / views, parts/s, views/s",
            f"{figures.parts} / {figures.views}, "
            f"{figures.parts_per_s:.1f}, {figures.views_per_s:.1f}",
        )
    for name, figures in (("single process", batched), ("naive loop", naive)):
        report.add(
            f"{name}: seconds in " + ", ".join(figures.phases),
            " / ".join(f"{s:.1f}" for s in figures.phases.values()) + f" of {figures.seconds:.1f}",
        )
    report.add("line / single process (parts/s)", f"{line.parts_per_s / batched.parts_per_s:.2f}x")
    report.add("line / naive loop (parts/s)", f"{line.parts_per_s / naive.parts_per_s:.2f}x")
    report.add(
        "line: part-end frame -> verdict p50 / p95 / p99", percentiles(line.end_to_verdict_ns)
    )
    report.add(
        "line: last sighting -> verdict p50 / p95 / p99", percentiles(line.last_seen_to_verdict_ns)
    )
    report.add(f"line: median ms {HOPS}", hop_medians(settings))
    report.add("line: verdicts", ", ".join(f"{k} {v}" for k, v in sorted(line.verdicts.items())))
    report.add(
        "line: CPU seconds per role, start-up and model warm-up included (run_line wall "
        + f"{wall:.1f} s, first capture -> last verdict {line.seconds:.1f} s)",
        ", ".join(f"{role} {s:.1f}" for role, s in sorted(cpu.items())),
    )


def camera_run(
    report: Report,
    cameras: int,
    seconds: float,
    redis_url: str,
    work: Path,
    name: str,
    bases: list[Path],
    sample_s: float = 1.0,
) -> ProcessSampler:
    """`cameras` live cameras at 5 fps in parts mode (real-time replays of moving lines)."""
    live = [
        {
            "id": f"cam{i + 1}",
            "realtime": True,
            "url": str(looped(bases, first=i, seconds=seconds, name=f"{name}-cam{i + 1}")),
        }
        for i in range(cameras)
    ]
    settings = line_settings(work, name, redis_url, live)
    with ProcessSampler(redis_url=redis_url, line=name, every_s=sample_s) as sampler:
        started = time.perf_counter()
        stats = run_line(settings)
        wall = time.perf_counter() - started
    figures = part_figures(settings, live=True)
    label = f"{cameras} camera{'s' if cameras > 1 else ''} @ 5 fps"
    report.add(
        f"{label}: parts / views, verdicts",
        f"{figures.parts} / {figures.views}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(figures.verdicts.items())),
    )
    report.add(
        f"{label}: part-end frame -> verdict p50 / p95 / p99",
        percentiles(figures.end_to_verdict_ns),
    )
    report.add(
        f"{label}: last sighting -> verdict p50 / p95 / p99",
        percentiles(figures.last_seen_to_verdict_ns),
    )
    report.add(f"{label}: median ms {HOPS}", hop_medians(settings))
    report.add(
        f"{label}: dropped / stale views, late verdicts",
        f"{stats.dropped} / {stats.stale}, {figures.late}",
    )
    report.add(
        f"{label}: CPU cores busy per role over the run ({wall:.0f} s, start-up included)",
        ", ".join(
            f"{role} {cpu / wall:.2f}" for role, cpu in sorted(sampler.cpu_by_role().items())
        ),
    )
    return sampler


def soak(report: Report, seconds: float, redis_url: str, work: Path, bases: list[Path]) -> None:
    report.section = (
        f"Soak: 8 live cameras for {seconds:.0f} s, RSS per role every {SOAK_SAMPLE_S:.0f} s"
    )
    sampler = camera_run(report, 8, seconds, redis_url, work, "soak", bases, sample_s=SOAK_SAMPLE_S)
    marks = [m for m in (SOAK_SAMPLE_S, 600.0, seconds / 2) if m < seconds]
    for role in sorted(sampler.peak_by_role()):
        curve = ", ".join(f"{sampler.total_at(role, m):.0f} MB at {m / 60:.0f} min" for m in marks)
        report.add(
            f"soak: {role} RSS, all its processes",
            curve + f", {sampler.total_at(role, seconds - SOAK_SAMPLE_S):.0f} MB at the end",
        )
    for role, mb in sorted(sampler.peak_by_role().items()):
        growth = sampler.growth_per_hour(role, skip_s=SOAK_SAMPLE_S)
        report.add(
            f"soak: {role} peak RSS, growth per hour (fit after the first minute)",
            f"{mb:.0f} MB, {growth:+.1%}",
        )


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


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def model_version() -> str:
    from linewatch.pipeline.inference.classifier import read_model_info

    return read_model_info(MODEL_DIR)[0].version


def write_results(report: Report, path: Path, command: str, started: str, loads: list[str]) -> None:
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}  ",
        f"Run: `{command}` from {started} to {now}  ",
        f"Load average (1 / 5 / 15 min): {'; '.join(loads)}  ",
        f"Model: the shipped `models/linewatch-tile` (version {model_version()}) on CPU "
        "(oneDNN, 2 threads); "
        "lines in parts mode (`method: contrast`, `merge_gap: 64`) on `linewatch simulate` "
        "procedural tiles, 640x480.",
        "",
    ]
    section = None
    for name_section, name, value in report.rows:
        if name_section != section:
            section = name_section
            lines += ["", f"### {section}", "", "| measure | value |", "|---|---|"]
        lines.append(f"| {name} | {value} |")
    lines.append("")
    text = path.read_text() if path.exists() else ""
    extra = text.split(MORE, 1)[1] if MORE in text else "\n"
    path.write_text("\n".join(lines) + MORE + extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-s", type=float, default=3600.0)
    parser.add_argument("--camera-run-s", type=float, default=45.0)
    parser.add_argument("--cameras", type=int, nargs="*", default=[1, 8, 30])
    parser.add_argument("--rounds", type=int, default=2, help="side-by-side rounds (best kept)")
    parser.add_argument(
        "--sections",
        nargs="*",
        default=["side", "stages"],
        choices=["side", "stages"],
        help="development runs: leave out the side-by-side or stage figures",
    )
    parser.add_argument("--video-dir", type=Path, help="keep the simulated videos here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    command = "python " + " ".join(["bench/run_bench.py", *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    os.environ.setdefault("LINEWATCH_LOG_LEVEL", "ERROR")  # not every NG part
    setup_logging("bench")
    report, loads = Report(), []

    def done(section: str) -> None:  # each section's figures are kept as it ends
        loads.append(f"after {section} {load_average()}")
        write_results(report, args.out, command, started, loads)

    loads.append(f"start {load_average()}")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        work = Path(tmp)
        bases = base_videos(args.video_dir or work)
        video = looped(bases, first=0, seconds=len(bases) * BASE_MIN_S, name="line")
        if "side" in args.sections:
            side_by_side(report, video, redis.url, work, args.rounds)
            done("side by side")
        if "stages" in args.sections:
            stage_figures(report, bases[0], redis.url, work)
            done("stages")
        report.section = "Live cameras at 5 fps, parts mode (paced file cameras through `run_line`)"
        for cameras in args.cameras:
            camera_run(report, cameras, args.camera_run_s, redis.url, work, f"cams{cameras}", bases)
            done(f"{cameras} cameras")
        if args.soak_s > 0:
            soak(report, args.soak_s, redis.url, work, bases)
            done("soak")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
