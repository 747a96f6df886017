"""`linewatch gallery add --from-reviews` and `linewatch gallery show` (linewatch/gallery.py),
and `linewatch gallery build --line-video` (pipeline/training/line_gallery.py)."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.errors import LinewatchError


def add_commands(
    commands: argparse._SubParsersAction, shared: list[argparse.ArgumentParser]
) -> None:
    gallery = commands.add_parser(
        "gallery", help="the running model's gallery: add reviewed parts, show its classes"
    )
    actions = gallery.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        parents=shared,
        help="embed reviewed parts with the running model and add them to its gallery",
    )
    add.add_argument(
        "--from-reviews", action="store_true", help="the reviewed parts' crops (required)"
    )
    add.add_argument("--since", help="only parts captured since: 30d or a UTC date")
    add.add_argument("--label", help="only parts whose latest review gave this class")
    add.set_defaults(func=cmd_gallery_add)
    show = actions.add_parser(
        "show", parents=shared, help="the running model's gallery: classes, trained and reviewed"
    )
    show.set_defaults(func=cmd_gallery_show)
    build = actions.add_parser(
        "build",
        parents=shared,
        help="replace a model folder's gallery by the parts of simulated line videos of "
        "its training photos (and choose its novelty threshold on them, out of fold)",
    )
    build.add_argument(
        "--line-video",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="a `linewatch simulate --split train` folder (cam1.mp4 + truth); repeatable",
    )
    build.add_argument("--model", type=Path, required=True, help="the model folder to update")
    build.add_argument(
        "--split-file",
        type=Path,
        help="the model's split.json: the videos must show its training photos only",
    )
    build.add_argument("--seed", type=int, default=0, help="the held-out folds' seed")
    build.set_defaults(func=cmd_gallery_build)


def _line(settings: Settings) -> tuple[Any, Path]:
    """The line's Redis client (None when none runs) and the model folder it runs."""
    from linewatch.pipeline.inference.switching import running_model_dir
    from linewatch.pipeline.streams import broker

    if settings.has_redis:
        client = broker.connect_to(settings, "`linewatch gallery`")
    else:  # a line on the embedded defaults, when one runs
        url = broker.embedded_url(settings.data_dir)
        client = broker.connect(url) if url else None
    return client, running_model_dir(client, settings)


def cmd_gallery_add(args: argparse.Namespace) -> int:
    from linewatch.gallery import add_from_reviews, gallery_section
    from linewatch.pipeline.inference.gallery import bump_revision
    from linewatch.pipeline.inference.loading import load_model
    from linewatch.pipeline.storage import database
    from linewatch.pipeline.storage.reporting import parse_option_time

    if not args.from_reviews:
        raise LinewatchError("gallery add adds reviewed parts only: pass --from-reviews")
    since = parse_option_time("--since", args.since) if args.since else None
    settings = load_settings(args.config)
    client, folder = _line(settings)
    gallery_section(folder)  # a model without a gallery is refused before paddle loads
    inference = settings.inference
    model = load_model(folder, inference.threads, inference.device, False, inference.max_batch)
    added = add_from_reviews(
        engine=database.open_database(settings.resolved_database_url()),
        folder=folder,
        model=model,
        since=since,
        label=args.label,
        bump=partial(bump_revision, client, settings) if client is not None else None,
    )
    print(added.summary())
    return 0


def cmd_gallery_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from linewatch.gallery import gallery_contents
    from linewatch.pipeline.inference.gallery import read_revision
    from linewatch.pipeline.inference.loading import describe_model

    settings = load_settings(args.config)
    client, folder = _line(settings)
    contents = gallery_contents(folder)
    version = describe_model(folder).version
    revision = read_revision(client, settings, version) if client is not None else "?"
    section = contents.section
    table = Table(
        "class",
        "trained",
        "reviewed",
        title=f"gallery of {folder} ({version}, revision {revision})",
        caption=f"novelty threshold {section.novelty_threshold} (mean of the "
        f"{section.top_views} most novel views), {section.neighbours}-NN label, "
        f"{section.embedding_size}-d",
    )
    for label, trained, reviewed in contents.rows():
        table.add_row(label, str(trained), str(reviewed))
    Console(width=120).print(table)
    return 0


def cmd_gallery_build(args: argparse.Namespace) -> int:
    from linewatch.pipeline.training.line_gallery import rebuild_folder

    section = rebuild_folder(
        args.model, list(args.line_video), split_file=args.split_file, seed=args.seed
    )
    print(
        f"{args.model / section['file']}: {section['entries']} entries, novelty threshold "
        f"{section['novelty_threshold']} ({section['selection_false_reject_rate']:.2%} of "
        "the held-out parts reach it)"
    )
    print(_tell_running_workers(load_settings(args.config), args.model))
    return 0


def _tell_running_workers(settings: Settings, built: Path) -> str:
    """Bump the gallery revision when a running line runs the folder just rebuilt."""
    from linewatch.pipeline.inference.gallery import bump_revision
    from linewatch.pipeline.inference.loading import describe_model

    try:
        client, running = _line(settings)
    except LinewatchError as exc:
        return f"no running line reached ({exc}); a line running this folder reloads it on restart"
    if client is None or running.resolve() != built.resolve():
        return "no running line runs this folder"
    revision = bump_revision(client, settings, describe_model(built).version)
    return f"the running line's workers reload it (gallery revision {revision})"
