"""Report queries over 10 million detections in PostgreSQL, before and after pruning.

    python bench/report_bench.py                      # 10M rows, writes bench/RESULTS.md
    python bench/report_bench.py --rows 1000000 --no-write

Fills a private schema (created here, dropped at the end) with server-side
INSERT ... SELECT generate_series, runs ANALYZE, then times every report query
(pipeline/storage/reporting.py) over the last 24 h and the full 30 days: first on raw rows,
then after rolling everything older than a day into hourly summaries. The roll-up is the
SQL equivalent of `linewatch db prune --older-than 1d` (the Python prune would take
minutes here); the bench checks both give the same reports. Its section of
bench/RESULTS.md starts at the `<!-- report-bench -->` marker; nothing above it changes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

from pg_scratch import (
    CAMERAS,
    DAYS,
    best_of,
    fill,
    parse_args,
    report_windows,
    roll_up,
    scratch_schema,
    utc_now,
)
from results_md import write_section
from sqlalchemy import Engine

from linewatch.pipeline.storage import reporting

# Row i: camera i % CAMERAS, evenly spread over the last DAYS days; a multiplicative hash
# picks the label: 1% stale (empty label), 93% free, the rest five defect classes.
FILL = r"""
INSERT INTO detections (camera_id, seq, pts, status, model_name, model_version, label,
    score, topk, is_defect, captured_at, capture_ts, ingest_ts, dequeue_ts, infer_start_ts,
    infer_end_ts, sink_ts, worker_id)
SELECT camera_id, i / :cameras, (i / :cameras) * 0.2, CASE WHEN label = '' THEN 'stale'
    ELSE 'ok' END, 'linewatch-tile', version, label, 0.9, label || '\:0.9000',
    label NOT IN ('', 'free'), at, ts, ts, ts, ts, ts, ts, 'bench'
FROM (
    SELECT i, 'cam' || lpad((i % :cameras)::text, 2, '0') AS camera_id,
        CASE WHEN i % 10 = 0 THEN 'v2-shadow' ELSE 'v1' END AS version,
        CASE WHEN h < 10 THEN '' WHEN h < 940 THEN 'free' WHEN h < 965 THEN 'crack'
            WHEN h < 980 THEN 'blowhole' WHEN h < 990 THEN 'break' WHEN h < 995 THEN 'fray'
            ELSE 'uneven' END AS label,
        at, (extract(epoch FROM at) * 1e9)::bigint AS ts
    FROM (
        SELECT i, (i * 2654435761) % 1000 AS h, :start + i * :step AS at
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
    ) AS hashed
) AS generated
"""

# `linewatch db prune` in one statement pair (pipeline/storage/retention.py does it batch by batch).
ROLL_UP = """
INSERT INTO detection_hourly (camera_id, hour, model_version, label, frames, defects)
SELECT camera_id, date_trunc('hour', captured_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
    model_version, label, count(*), sum(CASE WHEN is_defect THEN 1 ELSE 0 END)
FROM detections WHERE captured_at < :cutoff
GROUP BY 1, 2, 3, 4
ON CONFLICT (camera_id, hour, model_version, label) DO UPDATE
SET frames = detection_hourly.frames + excluded.frames,
    defects = detection_hourly.defects + excluded.defects
"""
NOTES = [
    "- Reports filter `report_rows` on capture time, so a 24 h window reads its rows through",
    "  `ix_detections_captured_at`. A 30-day window over raw rows aggregates every row",
    "  (parallel seq scan + hash aggregate): that is where the 2 s target is missed on this",
    "  shared 2-core machine. Pruned history is read from the hourly summaries instead.",
    "- `linewatch report` runs `build_report` (two scans of the window), not the five queries.",
    "- After the one-shot roll-up the bench runs VACUUM FULL on `detections`: a line pruned",
    "  daily reuses the freed space, so its heap holds about a day of rows, as here.",
]
QUERIES: dict[str, Callable[[Engine, reporting.Window], object]] = {
    "defects per camera per hour": reporting.camera_hours,
    "defects per camera per shift": reporting.camera_shifts,
    "defect rate per class": reporting.class_rates,
    "top defective hours": reporting.top_hours,
    "model version comparison": reporting.model_versions,
    "whole report (build_report: 2 scans)": reporting.build_report,
}


def time_reports(
    engine: Engine, windows: dict[str, reporting.Window], repeats: int
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], object]]:
    seconds, results = {}, {}
    for window_name, window in windows.items():
        for name, query in QUERIES.items():
            key = (window_name, name)
            seconds[key], results[key] = best_of(lambda q=query, w=window: q(engine, w), repeats)
            print(f"  {window_name:<8} {name:<38} {seconds[key] * 1000:8.0f} ms", flush=True)
    return seconds, results


def machine() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
    return f"{os.cpu_count()} cores ({names[0] if names else platform.processor()})"


def section(
    args: argparse.Namespace,
    loads: dict[str, float],
    raw: dict,
    pruned: dict,
    same: bool,
    server: str,
) -> str:
    lines = [
        "## Report over 10M rows (PostgreSQL)"
        if args.rows == 10_000_000
        else f"## Report over {args.rows:,} rows (PostgreSQL)",
        "",
        f"Run: `python bench/report_bench.py --rows {args.rows}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, {server}.  ",
        f"{args.rows:,} detections over {DAYS} days, {CAMERAS} cameras, 2 model versions; "
        f"fill {loads['fill']:.0f} s (INSERT ... SELECT generate_series + VACUUM ANALYZE), "
        f"roll-up of all but the last day into hourly summaries {loads['prune']:.0f} s.  ",
        f"Best of {args.repeats} runs per query. Reports identical before and after the "
        f"roll-up: {'yes' if same else 'NO'}.",
        "",
        "| report query | last 24 h, raw | 30 days, raw | last 24 h, pruned | 30 days, pruned |",
        "|---|---|---|---|---|",
    ]
    for name in QUERIES:
        cells = [
            f"{table[(w, name)] * 1000:.0f} ms" for table in (raw, pruned) for w in ("24h", "30d")
        ]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    return "\n".join([*lines, "", *NOTES]) + "\n"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    now = utc_now()
    with scratch_schema(args.url, "report_bench") as (engine, server):
        windows = report_windows(now)
        print(f"filling {args.rows:,} rows", flush=True)
        loads = {"fill": fill(engine, sql=FILL, rows=args.rows, now=now)}
        raw, raw_results = time_reports(engine, windows, args.repeats)
        loads["prune"] = roll_up(engine, sql=ROLL_UP, table="detections", now=now)
        print(f"rolled up in {loads['prune']:.1f} s; after prune:", flush=True)
        pruned, pruned_results = time_reports(engine, windows, args.repeats)
        same = raw_results == pruned_results
        print(f"reports identical before and after prune: {same}")
    if not args.no_write:
        text_ = section(args, loads, raw, pruned, same, server)
        write_section(args.out, name="report-bench", body=text_)
        print(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
