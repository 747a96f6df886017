"""`linewatch report`: a defect report for a time window as one HTML file or a CSV folder.

Two sections: parts first (what a quality engineer counts: parts, NG parts, first-pass
yield, NG rate per camera / hour / shift, Pareto of defect classes, uninspected parts,
model versions), then frames (per-frame figures as before).
HTML: one self-contained file (tables + matplotlib plots inlined as base64 PNG).
CSV: a folder with one file per table (parts_summary, parts_camera_hours, parts_line_hours,
parts_camera_shifts, parts_pareto, parts_model_versions; summary, camera_hours,
camera_shifts, class_rates, top_hours, model_versions, shadow_comparison); an empty window
still writes every file, headers only, and the summaries say "no parts in window" /
"no detections in window".
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.exc import OperationalError

from linewatch.pipeline.errors import LinewatchError, ServiceUnavailable, one_line
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.storage.reporting import (
    CameraHour,
    PartCounts,
    PartsReport,
    Report,
    Window,
    build_report,
    open_for_reports,
    parse_option_time,
)

EMPTY = "no detections in window"
EMPTY_PARTS = "no parts in window"
HALF_HOUR = timedelta(minutes=30)
COUNT_HEADER = ("parts", "OK", "NG", "uninspected", "late", "first-pass yield", "NG rate")
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


def _counts(counts: PartCounts) -> tuple[object, ...]:
    return (
        *counts.as_tuple(),
        _rate(counts.first_pass_yield),
        _rate(counts.ng_rate),
    )


def _parts_of(report: Report) -> PartsReport:
    return report.parts or PartsReport(report.window, [], [], [], [])


def part_tables(parts: PartsReport) -> dict[str, Table]:
    """The parts section's tables: name -> (header, rows)."""
    w, totals = parts.window, parts.totals
    place = ("camera", "hour (UTC)", "shift")
    return {
        "parts_summary": (
            ("since (UTC)", "until (UTC)", "camera", *COUNT_HEADER, "note"),
            [
                (
                    _time(w.since),
                    _time(w.until),
                    w.camera or "all",
                    *_counts(totals),
                    "" if totals.parts else EMPTY_PARTS,
                )
            ],
        ),
        "parts_camera_hours": (
            (*place, *COUNT_HEADER),
            [(r.camera_id, _time(r.hour), r.shift, *_counts(r.counts)) for r in parts.camera_hours],
        ),
        "parts_line_hours": (
            ("hour (UTC)", *COUNT_HEADER),
            [(_time(hour), *_counts(counts)) for hour, counts in parts.line_hours],
        ),
        "parts_camera_shifts": (
            ("camera", "shift start (UTC)", "shift", *COUNT_HEADER),
            [
                (s.camera_id, _time(s.shift_start), s.shift, *_counts(s.counts))
                for s in parts.camera_shifts
            ],
        ),
        "parts_pareto": (
            ("defect class", "NG parts", "share of NG parts", "cumulative share"),
            [(p.label, p.ng, _rate(p.share), _rate(p.cumulative_share)) for p in parts.pareto],
        ),
        "parts_model_versions": (
            ("model version", *COUNT_HEADER, "NG parts per class"),
            [
                (
                    v.model_version,
                    *_counts(v.counts),
                    " ".join(f"{label}={count}" for label, count in v.ng_per_class),
                )
                for v in parts.model_versions
            ],
        ),
    }


def write_csv(report: Report, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (header, rows) in {**part_tables(_parts_of(report)), **tables(report)}.items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        paths.append(path)
    return paths


TITLES = {
    "parts_summary": "Parts: summary",
    "parts_camera_hours": "Parts per camera per hour",
    "parts_line_hours": "Parts per hour (all cameras)",
    "parts_camera_shifts": "Parts per camera per shift (06-14, 14-22, 22-06 UTC)",
    "parts_pareto": "Pareto of defect classes (NG parts)",
    "parts_model_versions": "Model version comparison on parts",
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


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def part_plots(parts: PartsReport) -> dict[str, str]:
    """Inline <img> tags per part table name. Lines carry markers: one hour is one point."""
    plt = _pyplot()
    figure, (count_axes, rate_axes) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for camera in sorted({r.camera_id for r in parts.camera_hours}):
        mine = [r for r in parts.camera_hours if r.camera_id == camera]
        when = [r.hour for r in mine]
        count_axes.plot(when, [r.counts.parts for r in mine], marker="o", label=camera)
        rate_axes.plot(when, [r.counts.ng_rate for r in mine], marker="o", label=camera)
    count_axes.set(ylabel="parts per hour", ylim=(0, None))
    count_axes.legend(fontsize="small")
    rate_axes.set(ylabel="NG rate", xlabel="hour (UTC)", ylim=(0, 1.05))
    _hour_span(rate_axes, [r.hour for r in parts.camera_hours])
    figure.autofmt_xdate()
    images = {"parts_camera_hours": _png(figure), "parts_model_versions": _versions_png(parts)}
    if parts.pareto:
        images["parts_pareto"] = _pareto_png(parts)
    return images


def _hour_span(axes, hours: list[datetime]) -> None:  # type: ignore[no-untyped-def]
    """Half an hour either side of the data: one hour is one point, not a span of years."""
    if hours:
        axes.set_xlim(min(hours) - HALF_HOUR, max(hours) + HALF_HOUR)


def _pareto_png(parts: PartsReport) -> str:
    figure, axes = _pyplot().subplots(figsize=(7, 3))
    labels = [p.label for p in parts.pareto]
    axes.bar(labels, [p.ng for p in parts.pareto], color="#4a78b5")
    axes.set(ylabel="NG parts")
    cumulative = axes.twinx()
    cumulative.plot(labels, [p.cumulative_share for p in parts.pareto], color="#d9822b", marker="o")
    cumulative.set(ylabel="cumulative share", ylim=(0, 1.05))
    return _png(figure)


def _versions_png(parts: PartsReport) -> str:
    figure, axes = _pyplot().subplots(figsize=(7, 3))
    measures = ("first-pass yield", "NG rate", "uninspected share")
    width = 0.8 / max(len(parts.model_versions), 1)
    for index, version in enumerate(parts.model_versions):
        c = version.counts
        values = (c.first_pass_yield, c.ng_rate, c.uninspected / c.parts if c.parts else 0.0)
        positions = [i + index * width for i in range(len(measures))]
        axes.bar(positions, values, width, label=version.model_version)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(measures))], measures)
    axes.set(ylabel="share of the version's parts", ylim=(0, 1.05))
    axes.legend(fontsize="small")
    return _png(figure)


def plots(report: Report) -> dict[str, str]:
    """Inline <img> tags per frame table name (Agg backend: no display needed)."""
    plt = _pyplot()
    hours = plt.subplots(figsize=(10, 3.5))
    for camera in sorted({r.camera_id for r in report.camera_hours}):
        mine = [r for r in report.camera_hours if r.camera_id == camera]
        when, defects = [r.hour for r in mine], [r.defects for r in mine]
        hours[1].plot(when, defects, marker="o", label=camera)
    _hour_span(hours[1], [r.hour for r in report.camera_hours])
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


def _section(tables_: dict[str, Table], images: dict[str, str]) -> list[str]:
    out = []
    for name, (header, rows) in tables_.items():
        out.append(f"<h3>{html.escape(TITLES[name])}</h3>")
        out.append(images.get(name, ""))
        out.append(_html_table(header, rows))
    return out


def _parts_section(parts: PartsReport) -> list[str]:
    if not parts.totals.parts:
        return ["<h2>Parts</h2>", f'<p class="empty">{EMPTY_PARTS.capitalize()}.</p>']
    return ["<h2>Parts</h2>", *_section(part_tables(parts), part_plots(parts))]


def _frames_section(report: Report) -> list[str]:
    out = ["<h2>Frames</h2>"]
    if not report.frames:
        out.append(f'<p class="empty">{EMPTY.capitalize()}.</p>')
    return out + _section(tables(report), plots(report) if report.frames else {})


def render_html(report: Report) -> str:
    w = report.window
    camera = f", camera {w.camera}" if w.camera else ""
    title = f"linewatch defect report {_time(w.since)} – {_time(w.until)} UTC{camera}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        *_parts_section(_parts_of(report)),
        *_frames_section(report),
    ]
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(report: Report, fmt: str, out: Path) -> list[Path]:
    """Write `report` as html (one file at `out`) or csv (a folder at `out`)."""
    if fmt == "csv":
        return write_csv(report, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return [out]


def make_report(
    url: str, since: str, until: str | None, camera: str | None, fmt: str, out: Path
) -> str:
    """Query the database at `url` and write the report; returns a one-line summary."""
    now = datetime.now(timezone.utc)
    window = Window(
        parse_option_time("--since", since, now),
        parse_option_time("--until", until, now) if until else now,
        camera,
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
    return f"wrote {where}: {_found_parts(_parts_of(report))}; {_found_frames(report)}"


def _found_parts(parts: PartsReport) -> str:
    totals = parts.totals
    if not totals.parts:
        return EMPTY_PARTS
    return (
        f"{totals.parts} parts, {totals.ng} NG, {totals.uninspected} uninspected, "
        f"first-pass yield {totals.first_pass_yield:.1%}"
    )


def _found_frames(report: Report) -> str:
    return f"{report.frames} frames, {report.defects} defects" if report.frames else EMPTY
