"""`linewatch report`: a defect report for a time window as one HTML file or a CSV folder.

HTML: one self-contained file (tables + matplotlib plots inlined as base64 PNG).
CSV: a folder with one file per table (summary, camera_hours, camera_shifts, class_rates,
top_hours, model_versions); an empty window still writes every file, headers only, and
summary.csv says "no detections in window".
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.exc import OperationalError

from linewatch.pipeline.errors import LinewatchError, ServiceUnavailable, one_line
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.storage.reporting import (
    CameraHour,
    Report,
    Window,
    build_report,
    open_for_reports,
    parse_time,
)

EMPTY = "no detections in window"
Table = tuple[Sequence[str], list[Sequence[object]]]


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def _rate(value: float) -> str:
    return f"{value:.4f}"


def _hour_rows(rows: Iterable[CameraHour]) -> list[Sequence[object]]:
    return [
        (r.camera_id, _time(r.hour), r.shift, r.frames, r.defects, _rate(r.defect_rate))
        for r in rows
    ]


def tables(report: Report) -> dict[str, Table]:
    """Every table of the report: name -> (header, rows); the same for HTML and CSV."""
    w = report.window
    rate = report.defects / report.frames if report.frames else 0.0
    hour_header = ("camera", "hour (UTC)", "shift", "frames", "defects", "defect rate")
    return {
        "summary": (
            ("since (UTC)", "until (UTC)", "camera", "frames", "defects", "defect rate", "note"),
            [
                (
                    _time(w.since),
                    _time(w.until),
                    w.camera or "all",
                    report.frames,
                    report.defects,
                    _rate(rate),
                    "" if report.frames else EMPTY,
                )
            ],
        ),
        "camera_hours": (hour_header, _hour_rows(report.camera_hours)),
        "camera_shifts": (
            ("camera", "shift start (UTC)", "shift", "frames", "defects", "defect rate"),
            [
                (
                    s.camera_id,
                    _time(s.shift_start),
                    s.shift,
                    s.frames,
                    s.defects,
                    _rate(s.defect_rate),
                )
                for s in report.camera_shifts
            ],
        ),
        "class_rates": (
            ("label", "frames", "defects", "share of frames"),
            [(c.label, c.frames, c.defects, _rate(c.rate)) for c in report.class_rates],
        ),
        "top_hours": (hour_header, _hour_rows(report.top_hours)),
        "model_versions": (
            ("model version", "frames", "defects", "defect rate", "frames per label"),
            [
                (
                    m.model_version,
                    m.frames,
                    m.defects,
                    _rate(m.defect_rate),
                    " ".join(f"{label}={count}" for label, count in m.per_class),
                )
                for m in report.model_versions
            ],
        ),
        "shadow_comparison": (
            (
                "model version",
                "shadow version",
                "frames",
                "same label",
                "defects (live)",
                "defects (shadow)",
                "only live flags",
                "only shadow flags",
            ),
            [
                (
                    c.model_version,
                    c.shadow_version,
                    c.frames,
                    f"{c.same_label} ({_rate(c.agreement)})",
                    c.defects,
                    c.shadow_defects,
                    c.only_live_defects,
                    c.only_shadow_defects,
                )
                for c in report.shadow
            ],
        ),
    }


def write_csv(report: Report, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (header, rows) in tables(report).items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        paths.append(path)
    return paths


TITLES = {
    "summary": "Summary",
    "camera_hours": "Defects per camera per hour",
    "camera_shifts": "Defects per camera per shift (06-14, 14-22, 22-06 UTC)",
    "class_rates": "Defect rate per class",
    "top_hours": "Top defective hours",
    "model_versions": "Model version comparison",
    "shadow_comparison": "Shadow model against the live model, frame by frame",
}
STYLE = (
    "body{font-family:sans-serif;margin:24px;color:#222}"
    "table{border-collapse:collapse;margin:8px 0 24px}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
    "th{background:#e8eef7}td:first-child{text-align:left}"
    ".empty{font-size:1.4em;color:#a33}img{max-width:100%}"
)


def _html_table(header: Sequence[str], rows: list[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(figure) -> str:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def plots(report: Report) -> dict[str, str]:
    """Inline <img> tags per table name (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = plt.subplots(figsize=(10, 3.5))
    for camera in sorted({r.camera_id for r in report.camera_hours}):
        mine = [r for r in report.camera_hours if r.camera_id == camera]
        hours[1].plot([r.hour for r in mine], [r.defects for r in mine], label=camera)
    hours[1].set(ylabel="defects per hour", xlabel="hour (UTC)")
    hours[1].legend(fontsize="small")
    hours[0].autofmt_xdate()

    # Defect classes only: the normal class would dwarf them (all classes when none is).
    shown = [c for c in report.class_rates if c.defects] or report.class_rates
    labels = [c.label for c in shown]
    classes = plt.subplots(figsize=(7, 3))
    classes[1].bar(labels, [c.rate for c in shown], color="#4a78b5")
    classes[1].set(ylabel="share of all frames")

    versions = plt.subplots(figsize=(7, 3))
    width = 0.8 / max(len(report.model_versions), 1)
    for index, stats in enumerate(report.model_versions):
        counts = dict(stats.per_class)
        shares = [counts.get(label, 0) / stats.frames for label in labels]
        positions = [i + index * width for i in range(len(labels))]
        versions[1].bar(positions, shares, width, label=stats.model_version)
    versions[1].set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels)
    versions[1].set(ylabel="share of the version's frames")
    versions[1].legend(fontsize="small")
    return {
        "camera_hours": _png(hours[0]),
        "class_rates": _png(classes[0]),
        "model_versions": _png(versions[0]),
    }


def render_html(report: Report) -> str:
    w = report.window
    camera = f", camera {w.camera}" if w.camera else ""
    title = f"linewatch defect report {_time(w.since)} – {_time(w.until)} UTC{camera}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if not report.frames:
        parts.append(f'<p class="empty">{EMPTY.capitalize()}.</p>')
    images = plots(report) if report.frames else {}
    for name, (header, rows) in tables(report).items():
        parts.append(f"<h2>{html.escape(TITLES[name])}</h2>")
        parts.append(images.get(name, ""))
        parts.append(_html_table(header, rows))
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_report(report: Report, fmt: str, out: Path) -> list[Path]:
    """Write `report` as html (one file at `out`) or csv (a folder at `out`)."""
    if fmt == "csv":
        return write_csv(report, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return [out]


def _parse(flag: str, text: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise LinewatchError(f"{flag}: {exc}") from exc


def make_report(
    url: str, since: str, until: str | None, camera: str | None, fmt: str, out: Path
) -> str:
    """Query the database at `url` and write the report; returns a one-line summary."""
    now = datetime.now(timezone.utc)
    window = Window(
        _parse("--since", since, now), _parse("--until", until, now) if until else now, camera
    )
    if window.since >= window.until:
        raise LinewatchError(f"--since {since} is not before --until {until or 'now'}")
    engine = open_for_reports(url)
    try:
        report = build_report(engine, window)
    except OperationalError as exc:
        raise ServiceUnavailable(
            f"database {redact_url(url)} failed during the report: {one_line(exc.orig)}"
        ) from exc
    finally:
        engine.dispose()
    paths = write_report(report, fmt, out)
    where = out if fmt == "html" else f"{out}/ ({len(paths)} CSV files)"
    found = f"{report.frames} frames, {report.defects} defects" if report.frames else EMPTY
    return f"wrote {where}: {found}"
