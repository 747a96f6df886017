"""The `linewatch` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.errors import LinewatchError, one_line
from linewatch.pipeline.runtime import setup_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

Command = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return load_settings(args.config)


def _redis(args: argparse.Namespace, what: str):  # type: ignore[no-untyped-def]
    from linewatch.pipeline.streams import broker

    settings = _settings(args)
    return settings, broker.connect_to(settings, f"`linewatch {what}`")


def cmd_run(args: argparse.Namespace) -> int:
    from linewatch.line import run_line

    setup_logging("run", args.debug)
    stats = run_line(_settings(args), debug=args.debug, strict=args.strict)
    print(
        f"decoded {stats.decoded}, inferred {stats.inferred}, written {stats.written}, "
        f"dropped {stats.dropped}, stale {stats.stale}, dead letters {stats.dead_letters}"
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from linewatch.workers import inference, ingest, sink

    settings = _settings(args)  # the validated object, secrets intact: never a JSON dump
    if args.role == "rq":
        cmd_rq_worker(settings, args.debug)
    elif args.role == "ingest":
        if not args.camera:
            raise LinewatchError("`linewatch worker ingest` needs --camera ID[,ID...]")
        ingest.main(settings, args.camera, args.debug, settings.metrics_port)
    elif args.role == "infer":
        inference.main(settings, args.id, args.debug, settings.metrics_port)
    else:
        sink.main(settings, args.id, args.debug, settings.metrics_port)
    return 0


def cmd_commission(args: argparse.Namespace) -> int:
    from linewatch.commission import run_commission

    setup_logging("commission", args.debug)
    run_commission(_settings(args), camera_id=args.camera, seconds=args.seconds, sheet=args.sheet)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from linewatch.demo import run_demo

    if not args.debug:
        os.environ.setdefault("LINEWATCH_LOG_LEVEL", "WARNING")  # the progress bar speaks
    setup_logging("demo", args.debug)
    port = args.port if args.serve else None
    return run_demo(args.data_dir, args.parts, args.fps, debug=args.debug, serve_port=port)


def cmd_dlq(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from linewatch.pipeline.streams import broker, dead_letters

    settings, client = _redis(args, "dlq")
    stream = settings.dead_letter_stream
    if args.action == "replay":
        print(f"replayed {dead_letters.replay(client, stream, args.ids)} entries from {stream}")
    elif args.action == "purge":
        print(f"purged {dead_letters.purge(client, stream, args.ids)} entries from {stream}")
    else:
        table = Table(title=f"{stream} ({broker.backlog(client, stream)} entries)")
        for column in ("id", "source", "source entry", "reason"):
            table.add_column(column)
        for letter in dead_letters.list_dead(client, stream, args.limit):
            table.add_row(letter.id, letter.source, letter.entry_id, letter.reason)
        Console().print(table)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.layout == "moving":
        return _simulate_moving(args)
    if args.split_file:
        raise LinewatchError("--split-file needs --layout moving")
    from linewatch.pipeline.simulation.simulator import LineSpec, simulate

    spec = LineSpec(
        parts=args.parts,
        frames_per_part=args.frames_per_part or 8,
        fps=args.fps,
        defect_rate=args.defect_rate,
        seed=args.seed,
    )
    for video, truth in simulate(args.out, spec, args.cameras, args.images):
        print(f"{video}  (truth: {truth})")
    return 0


def _number_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW,HIGH (e.g. 0.6,1.6)") from None
    return low, high


def _simulate_moving(args: argparse.Namespace) -> int:
    from linewatch.pipeline.simulation import moving_line

    if args.split_file:
        from linewatch.pipeline.training.splits import split_items

        items = split_items(args.split_file, args.split, args.images)
    else:
        items = moving_line.folder_items(args.images) if args.images else []
    spec = moving_line.MovingLineSpec(
        parts=args.parts,
        fps=args.fps,
        frames_to_cross=args.frames_per_part or 16,
        defect_rate=args.defect_rate,
        width=args.width,
        height=args.height,
        part_size=args.part_size or round(args.height * 5 / 12),
        min_gap=args.min_gap,
        belt_level=args.belt_level,
        belt_grain=args.belt_grain,
        aspect=args.aspect,
        tone=args.tone,
        seed=args.seed,
    )
    for video, parts, frames in moving_line.simulate_moving(args.out, spec, args.cameras, items):
        print(f"{video}  (parts: {parts}, frames: {frames})")
    return 0


def cmd_line_score(args: argparse.Namespace) -> int:
    from linewatch.pipeline.storage import database as storage

    if not args.truth and not args.parts_truth:
        raise LinewatchError("line score needs --truth (frames) and/or --parts-truth (parts)")
    settings = _settings(args)
    engine = storage.open_database(settings.resolved_database_url())
    fps = args.fps
    if args.truth:
        fps = fps or _evaluate_frames(engine, args.truth, args.camera)
    if args.parts_truth:
        rejects = settings.verdict.rejects_uninspected
        _evaluate_parts(engine, args.parts_truth, args.camera, fps, rejects)
    return 0


def _evaluate_frames(engine: Engine, path: Path, camera: str) -> float:
    """Print the frame-level figures; returns the truth's fps."""
    from linewatch.pipeline.simulation.line_evaluation import FrameResult, score_line, truth_fps
    from linewatch.pipeline.simulation.simulator import read_truth
    from linewatch.pipeline.storage import database as storage

    try:
        truth = read_truth(path)
    except (OSError, ValueError) as exc:
        raise LinewatchError(f"cannot read truth file {path}: {exc}") from exc
    results = [FrameResult(*row) for row in storage.camera_frames(engine, camera)]
    if not results:
        raise LinewatchError(f"no detections for camera {camera!r} in the database")
    score = score_line(truth, results, storage.alert_open_seqs(engine, camera))
    print(
        f"frames scored {score.frames_scored}/{score.frames_in_truth}: accuracy "
        f"{score.frame_accuracy:.3f}, defect recall {score.defect_frame_recall:.3f}, "
        f"false alarms {score.false_alarm_frame_rate:.3f}\n"
        f"parts: {score.parts_caught}/{score.defective_parts} defective parts caught "
        f"(event recall {score.event_recall:.3f}); {score.alerts_on_defective_parts}/"
        f"{score.alerts} alerts on defective parts (event precision {score.event_precision:.3f})"
    )
    return truth_fps(truth)


def _evaluate_parts(
    engine: Engine, path: Path, camera: str, fps: float | None, reject: bool
) -> None:
    from linewatch.pipeline.simulation.line_evaluation import (
        StoredPart,
        read_part_truth,
        score_parts,
    )
    from linewatch.pipeline.storage.parts import camera_parts

    try:
        truth = read_part_truth(path, camera)
    except (OSError, ValueError, KeyError) as exc:
        raise LinewatchError(f"cannot read part truth file {path}: {exc}") from None
    stored = [StoredPart(*row) for row in camera_parts(engine, camera)]
    if not stored:
        raise LinewatchError(f"no parts for camera {camera!r} in the database")
    try:
        s = score_parts(truth, stored, fps, reject)
    except ValueError as exc:
        raise LinewatchError(f"{exc} (--fps, or --truth with the frame truth)") from None
    print(
        f"parts counted {s.parts_counted} (in truth {s.parts_in_truth}, matched "
        f"{s.parts_matched}, missed {s.parts_in_truth - s.parts_matched}, ghosts "
        f"{s.ghost_parts}, reported twice {s.reported_twice}, uninspected {s.uninspected})\n"
        f"defective parts rejected {s.defective_rejected}/{s.defective_parts} (recall "
        f"{s.defective_recall:.3f}); good parts rejected {s.good_rejected}/{s.good_parts} "
        f"(false-reject rate {s.false_reject_rate:.3f}); class accuracy "
        f"{s.class_accuracy:.3f} ({s.class_correct}/{s.class_scored} inspected parts)"
    )


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from linewatch.status import status_screen

    settings, client = _redis(args, "status")
    if not args.watch:
        Console().print(status_screen(client, settings))
        return 0
    with Live(status_screen(client, settings), refresh_per_second=1) as live:
        while True:
            time.sleep(args.watch)
            live.update(status_screen(client, settings))


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from linewatch.check import run_checks

    results = run_checks(_settings(args))
    table = Table("check", "", "detail", title="linewatch check")
    for result in results:
        mark = "[green]ok[/]" if result.ok else "[red]FAIL[/]"
        table.add_row(result.name, mark, result.detail)
    console = Console()
    (console if console.is_terminal else Console(width=200)).print(table)  # logs: no wrap
    failed = [r.name for r in results if not r.ok]
    print(
        f"{len(results) - len(failed)} of {len(results)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def cmd_db(args: argparse.Namespace) -> int:
    from linewatch.pipeline.redact import redact_url
    from linewatch.pipeline.storage import migrate
    from linewatch.pipeline.storage.database import create_database_engine, open_database

    url = _settings(args).resolved_database_url()
    engine = create_database_engine(url)
    if args.action == "prune":
        from linewatch.pipeline.storage import retention

        try:
            age = retention.parse_age(args.older_than)
        except ValueError as exc:
            raise LinewatchError(f"--older-than: {exc}") from exc
        removed = retention.prune(open_database(url), age)
        print(
            f"pruned {removed.detections} detections and {removed.parts} parts older than "
            f"{args.older_than} (kept hourly summaries)"
        )
    elif args.action == "upgrade":
        before, after = migrate.upgrade(engine)
        print(f"{redact_url(url)}: schema {before or 'empty'} -> {after}")
    else:
        current, head = migrate.current_revision(engine), migrate.head_revision()
        print(f"{redact_url(url)}: schema {current or 'empty'} (this linewatch: {head})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from linewatch.report import make_report

    if args.database_url and args.config:
        raise LinewatchError("report: pass --config or --database-url, not both")
    url = args.database_url or _settings(args).resolved_database_url()
    print(make_report(url, args.since, args.until, args.camera, args.format, args.out))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from linewatch.pipeline import jobs
    from linewatch.pipeline.video.source import SourceOptions, open_frames

    settings, client = _redis(args, "analyze")
    next(open_frames(str(args.video), SourceOptions()))  # a clear error now, not in the job
    job = jobs.enqueue_analysis(client, settings, args.video, args.camera or args.video.stem)
    print(f"enqueued {job.id}: analyse {args.video} (follow with `linewatch jobs`)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from linewatch.pipeline import jobs

    _, client = _redis(args, "jobs")
    table = Table(title=f"RQ queue {jobs.QUEUE}")
    table.add_column("job", no_wrap=True)
    for column in ("status", "description", "progress", "result / error"):
        table.add_column(column)
    for job in jobs.recent_jobs(client):
        progress = ", ".join(f"{k} {v}" for k, v in job.meta.items() if k in ("decoded", "sent"))
        outcome = str(job.return_value() or "") if job.is_finished else ""
        if job.is_failed and job.latest_result():
            outcome = one_line(job.latest_result().exc_string or "", limit=80, last=True)
        status = getattr(job.get_status(), "value", job.get_status())
        table.add_row(job.id, str(status), job.description or "", progress, outcome)
    Console().print(table)
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from linewatch.pipeline.inference import switching
    from linewatch.pipeline.inference.loading import describe_model
    from linewatch.pipeline.streams import broker

    settings, client = _redis(args, "model")
    if args.action == "use":
        if args.model_dir is None:
            raise LinewatchError("model use needs the model folder: linewatch model use DIR")
        info = describe_model(args.model_dir)  # a broken folder is refused here
        switching.use_model(client, settings, args.model_dir)
        # ingest (view size, crop margin), inference, the sink and the API all follow it
        print(f"line {settings.line}: switching to {info.name} {info.version}")
        return 0
    requested = switching.requested_model_dir(client, settings)
    print(f"requested: {requested or f'none (workers run {settings.inference.model_dir})'}")
    for key in broker.live_keys(client, settings.worker_key("*")):
        fields = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        if fields.get("role") == "infer":
            print(f"{key.rsplit(':', 1)[-1]}: {fields.get('model', '?')}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from linewatch.api.server import serve
    from linewatch.pipeline.streams import broker

    setup_logging("api", args.debug)
    settings = _settings(args)
    if not settings.has_redis:  # a line running on the embedded defaults, when there is one
        url = broker.embedded_url(settings.data_dir)
        settings = settings.model_copy(update={"redis_url": url}) if url else settings
    serve(settings, args.host, args.port)
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from linewatch.pipeline.storage import database
    from linewatch.pipeline.storage.reporting import parse_option_time
    from linewatch.pipeline.storage.review_export import export_reviewed

    if not args.reviewed:
        raise LinewatchError("dataset export writes reviewed parts only: pass --reviewed")
    since = parse_option_time("--since", args.since) if args.since else None
    engine = database.open_database(_settings(args).resolved_database_url())
    done = export_reviewed(engine, args.out, since)
    classes = ", ".join(f"{label} {count}" for label, count in done.per_class.items())
    print(
        f"wrote {done.files} reviewed crops to {args.out} ({classes or 'none'}); "
        f"{done.without_crop} reviewed parts had no crop"
    )
    return 0


def cmd_rq_worker(settings: Settings, debug: bool) -> None:
    from linewatch.pipeline import jobs
    from linewatch.pipeline.streams import broker

    client = broker.connect_to(settings, "`linewatch worker rq`", attempts=20)
    worker = jobs.JobWorker([jobs.QUEUE], connection=client, serializer=jobs.JSONSerializer)
    worker.work(with_scheduler=True, logging_level="DEBUG" if debug else "INFO")


CONFIG_HELP = "line YAML file (LINEWATCH_* env overrides)"
DEPRECATED = {"eval": "model eval", "evaluate": "line score"}  # old name -> new, one release


def _shared_options() -> argparse.ArgumentParser:
    """The options every line command shares, declared once (argparse `parents`).
    --debug is SUPPRESS-ed here so that a subcommand never resets `linewatch --debug`."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--config", type=Path, help=CONFIG_HELP)
    shared.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return shared


def cmd_config_example(args: argparse.Namespace) -> int:
    from linewatch.config_example import example_yaml

    print(example_yaml(), end="")
    return 0


def _deprecated(old: str, func: Command) -> Command:
    def warn_then_run(args: argparse.Namespace) -> int:
        print(
            f"linewatch: `linewatch {old}` is deprecated and goes in the next release; "
            f"use `linewatch {DEPRECATED[old]}`",
            file=sys.stderr,
        )
        return func(args)

    return warn_then_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linewatch", description="Streaming defect detection for factory line cameras."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = [_shared_options()]

    run = commands.add_parser(
        "run",
        parents=shared,
        help="run ingest, inference and sink (and the API: api.enabled) on this machine",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="stop at start-up when a live camera cannot be reached (commissioning); "
        "by default it is retried while the rest of the line runs",
    )
    run.set_defaults(func=cmd_run)

    check = commands.add_parser(
        "check",
        parents=shared,
        help="try every service and camera the line needs and list what is wrong",
    )
    check.set_defaults(func=cmd_check)

    commission = commands.add_parser(
        "commission",
        parents=shared,
        help="find the locator settings that fit a camera's belt; print them, draw the boxes",
    )
    commission.add_argument("--camera", help="camera id (needed when the line has several)")
    commission.add_argument(
        "--seconds", type=float, default=60.0, help="how much of the camera to read (60)"
    )
    commission.add_argument(
        "--sheet", type=Path, help="contact sheet PNG (default commission-<camera>.png)"
    )
    commission.set_defaults(func=cmd_commission)

    worker = commands.add_parser(
        "worker", parents=shared, help="run one role alone (scale out across hosts)"
    )
    worker.add_argument("role", choices=["ingest", "infer", "sink", "rq"])
    worker.add_argument("--camera", help="camera id (ingest); several: cam1,cam2 (one thread each)")
    worker.add_argument("--id", help="stable consumer name (infer, sink); default host-based")
    worker.set_defaults(func=cmd_worker)

    demo = commands.add_parser("demo", help="analyse a synthetic moving line end to end")
    demo.add_argument("--parts", type=int, default=40, help="parts on the demo line")
    demo.add_argument("--fps", type=float, default=10.0, help="frame rate of the demo video")
    demo.add_argument("--data-dir", type=Path, default=Path("linewatch-data/demo"))
    demo.add_argument(
        "--serve", action="store_true", help="the dashboard beside the line, and after it"
    )
    demo.add_argument("--port", type=int, default=8000, help="--serve: the dashboard's port")
    demo.set_defaults(func=cmd_demo)

    dlq = commands.add_parser(
        "dlq", parents=shared, help="list, replay or purge dead-lettered entries"
    )
    dlq.add_argument("action", choices=["list", "replay", "purge"])
    dlq.add_argument("ids", nargs="*", help="only these dead-letter ids")
    dlq.add_argument("--limit", type=int, default=100)
    dlq.set_defaults(func=cmd_dlq)

    db = commands.add_parser(
        "db",
        parents=shared,
        help="database schema (current, upgrade) and retention (prune)",
    )
    db.add_argument("action", choices=["current", "upgrade", "prune"])
    db.add_argument("--older-than", default="30d", help="prune: age such as 30d, 12h")
    db.set_defaults(func=cmd_db)

    report = commands.add_parser(
        "report", parents=shared, help="defect report for a time window (HTML or CSV)"
    )
    report.add_argument("--since", required=True, help="24h, 7d, or a UTC date 2026-11-01[T06:00]")
    report.add_argument("--until", help="same forms as --since (default: now)")
    report.add_argument("--camera", help="only this camera id")
    report.add_argument("--format", choices=["html", "csv"], default="html")
    report.add_argument("--out", type=Path, required=True, help="HTML file, or folder for CSV")
    report.add_argument(
        "--database-url", help="SQLAlchemy URL (default: from the config; not with --config)"
    )
    report.set_defaults(func=cmd_report)

    analyze = commands.add_parser(
        "analyze", parents=shared, help="enqueue a video file for analysis (RQ job)"
    )
    analyze.add_argument("video", type=Path)
    analyze.add_argument("--camera", help="camera id to record it under (default: file name)")
    analyze.set_defaults(func=cmd_analyze)

    jobs = commands.add_parser(
        "jobs", parents=shared, help="list RQ jobs (analyses, webhook deliveries)"
    )
    jobs.set_defaults(func=cmd_jobs)

    status = commands.add_parser(
        "status", parents=shared, help="cameras, workers, streams and recent alerts"
    )
    status.add_argument("--watch", type=float, default=0, help="refresh every N seconds")
    status.set_defaults(func=cmd_status)

    serve = commands.add_parser(
        "serve", parents=shared, help="HTTP API and dashboard (FastAPI on uvicorn)"
    )
    serve.add_argument("--host", help="listen address (default api.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default api.port, 8000)")
    serve.set_defaults(func=cmd_serve)

    dataset = commands.add_parser(
        "dataset", parents=shared, help="export reviewed part crops as an ImageFolder"
    )
    dataset.add_argument("action", choices=["export"])
    dataset.add_argument("--reviewed", action="store_true", help="reviewed parts (required)")
    dataset.add_argument("--out", type=Path, required=True, help="ImageFolder root to write")
    dataset.add_argument("--since", help="only parts captured since: 30d or a UTC date")
    dataset.set_defaults(func=cmd_dataset)

    config = commands.add_parser("config", help="the line.yaml settings: a complete example")
    config_commands = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    example = config_commands.add_parser(
        "example", help="print a complete, commented line.yaml (every key, its default)"
    )
    example.set_defaults(func=cmd_config_example)

    _add_simulate(commands)
    _add_training_commands(commands)  # train, export, quantize (and the old `eval`)
    _add_gallery_commands(commands, shared)

    model = commands.add_parser(
        "model", help="switch inference workers to another model; evaluate a model folder"
    )
    model_commands = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    use = model_commands.add_parser(
        "use", parents=shared, help="switch the line's inference workers to this model folder"
    )
    use.add_argument("model_dir", type=Path, help="the exported model folder")
    use.set_defaults(func=cmd_model)
    show = model_commands.add_parser(
        "show", parents=shared, help="the requested model and what each worker runs"
    )
    show.set_defaults(func=cmd_model, model_dir=None)
    old_eval = commands.choices["eval"]  # declared with the training commands
    model_commands.add_parser(
        "eval",
        parents=[old_eval],
        conflict_handler="resolve",  # the parent's own -h
        help="evaluate an exported model on an ImageFolder (as the worker runs it)",
        description=old_eval.description,
    )
    old_eval.set_defaults(func=_deprecated("eval", old_eval.get_default("func")))

    line = commands.add_parser("line", help="a line's results: score a run against its truth")
    line_commands = line.add_subparsers(dest="action", required=True, metavar="ACTION")
    score = line_commands.add_parser(
        "score", parents=shared, help="score a camera's results against truth CSVs"
    )
    _score_options(score)
    score.set_defaults(func=cmd_line_score)
    evaluate = commands.add_parser("evaluate", parents=shared)  # hidden: no help=
    _score_options(evaluate)
    evaluate.set_defaults(func=_deprecated("evaluate", cmd_line_score))

    # the old names parse and run for one release, but are no longer listed
    commands._choices_actions = [  # noqa: SLF001 (argparse has no public way to hide one)
        action for action in commands._choices_actions if action.dest not in DEPRECATED
    ]
    return parser


def _score_options(score: argparse.ArgumentParser) -> None:
    score.add_argument("--truth", type=Path, help="truth per frame (frame-level figures)")
    score.add_argument("--parts-truth", type=Path, help="truth per part (part figures)")
    score.add_argument("--fps", type=float, help="video fps (when --truth is not given)")
    score.add_argument("--camera", required=True)


def _add_simulate(commands: argparse._SubParsersAction) -> None:
    simulate = commands.add_parser("simulate", help="write conveyor-line videos + ground truth")
    simulate.add_argument("--out", type=Path, required=True)
    simulate.add_argument("--cameras", type=int, default=1)
    simulate.add_argument("--parts", type=int, default=40)
    simulate.add_argument(
        "--layout",
        choices=["moving", "stepped"],
        default="moving",
        help="moving: parts ride the belt through the view (parts mode); stepped: one part "
        "per group of frames, centred (frame mode, truth for frame-level evaluate)",
    )
    simulate.add_argument(
        "--frames-per-part",
        type=int,
        help="stepped: frames per part (8); moving: frames a part takes to cross (16)",
    )
    simulate.add_argument("--fps", type=float, default=10.0)
    simulate.add_argument("--defect-rate", type=float, default=0.2)
    simulate.add_argument("--images", type=Path, help="ImageFolder of tiles (default: synthetic)")
    simulate.add_argument(
        "--split-file", type=Path, help="moving: a training run's split.json: its photos only"
    )
    simulate.add_argument("--split", choices=["val", "train"], default="val")
    simulate.add_argument("--width", type=int, default=640, help="moving: frame width")
    simulate.add_argument("--height", type=int, default=480, help="moving: frame height")
    simulate.add_argument("--part-size", type=int, help="moving: part height (5/12 of the frame)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--min-gap", type=int, default=96, help="moving: px between parts")
    simulate.add_argument("--belt-level", type=float, default=40.0, help="moving: belt grey")
    simulate.add_argument(
        "--belt-grain", type=float, default=6.0, help="moving: belt texture strength (std)"
    )
    simulate.add_argument(
        "--aspect",
        type=_number_range,
        default=(0.6, 1.6),
        help="moving: photos' width/height clamped to LOW,HIGH (0.3,2.6 keeps the tiles' own)",
    )
    simulate.add_argument(
        "--tone",
        type=_number_range,
        default=(1.0, 1.0),
        help="moving: each part's grey scaled by a draw from LOW,HIGH (darker/brighter parts)",
    )
    simulate.set_defaults(func=cmd_simulate)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    from linewatch.training_cli import add_commands

    add_commands(commands)


def _add_gallery_commands(
    commands: argparse._SubParsersAction, shared: list[argparse.ArgumentParser]
) -> None:
    from linewatch.gallery_cli import add_commands

    add_commands(commands, shared)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.debug = args.debug or os.environ.get("LINEWATCH_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except LinewatchError as exc:
        if args.debug:
            raise
        print(f"linewatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
