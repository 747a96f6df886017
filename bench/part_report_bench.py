"""The parts report over 10 million parts in PostgreSQL, before and after pruning.

    python bench/part_report_bench.py                    # 10M parts, writes bench/RESULTS.md
    python bench/part_report_bench.py --rows 1000000 --no-write

Fills a private schema (created here, dropped at the end) with server-side
INSERT ... SELECT generate_series, runs ANALYZE, then times `build_parts_report`
(pipeline/storage/reporting.py: two scans of `report_part_rows`) over the last 24 h and the
full 30 days: first on raw rows, then after rolling every part older than a day into
`part_hourly`. The roll-up is the SQL equivalent of `linewatch db prune --older-than 1d`
(retention.prune_parts, which goes batch by batch); the bench checks both give the same
report. Its section of bench/RESULTS.md lies between the `<!-- part-report-bench -->`
marker and the next marker; nothing else changes.
"""

from __future__ import annotations

import argparse
import os
import time

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

# Part i: camera i % CAMERAS, spread evenly over the last DAYS days; a multiplicative hash
# picks the outcome: 0.5% uninspected, 0.3% decided late, 92% OK, the rest five classes.
FILL = r"""
INSERT INTO parts (camera_id, part_id, first_seq, last_seq, first_pts, last_pts,
    first_capture_ts, last_capture_ts, captured_at, views_sent, views_inferred, verdict,
    label, score, class_scores, model_version, end_reason, decided_ts, deadline_ts, late)
SELECT camera_id, part_id, part_id * 5, part_id * 5 + 4, part_id * 1.0, part_id * 1.0 + 0.8,
    ts, ts + 800000000, at, 3, CASE WHEN verdict = 'uninspected' THEN 0 ELSE 3 END, verdict,
    label, 0.5, '{}', version, 'left', ts + 1000000000, ts + 2000000000, h BETWEEN 5 AND 7
FROM (
    SELECT i / :cameras AS part_id, h, at, 'cam' || lpad((i % :cameras)::text, 2, '0')
            AS camera_id,
        CASE WHEN i % 10 = 0 THEN 'v2' ELSE 'v1' END AS version,
        CASE WHEN h < 5 THEN 'uninspected' WHEN h < 925 THEN 'ok' ELSE 'defect' END
            AS verdict,
        CASE WHEN h < 5 THEN '' WHEN h < 925 THEN 'free' WHEN h < 955 THEN 'crack'
            WHEN h < 975 THEN 'blowhole' WHEN h < 988 THEN 'break' WHEN h < 995 THEN 'fray'
            ELSE 'uneven' END AS label,
        (extract(epoch FROM at) * 1e9)::bigint AS ts
    FROM (
        SELECT i, (i * 2654435761) % 1000 AS h, :start + i * :step AS at
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
    ) AS hashed
) AS generated
"""

# retention.prune_parts in one statement pair, counting as the reports do.
ROLL_UP = """
INSERT INTO part_hourly (camera_id, hour, model_version, label, parts, ok, ng, uninspected,
    late)
SELECT camera_id, date_trunc('hour', captured_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
    model_version, label, count(*),
    sum(CASE WHEN verdict = 'ok' AND NOT late THEN 1 ELSE 0 END),
    sum(CASE WHEN verdict = 'defect' AND NOT late THEN 1 ELSE 0 END),
    sum(CASE WHEN verdict = 'uninspected' OR late THEN 1 ELSE 0 END),
    sum(CASE WHEN late THEN 1 ELSE 0 END)
FROM parts WHERE captured_at < :cutoff
GROUP BY 1, 2, 3, 4
ON CONFLICT (camera_id, hour, model_version, label) DO UPDATE
SET parts = part_hourly.parts + excluded.parts, ok = part_hourly.ok + excluded.ok,
    ng = part_hourly.ng + excluded.ng,
    uninspected = part_hourly.uninspected + excluded.uninspected,
    late = part_hourly.late + excluded.late
"""


NOTES = [
    "- Windows filter `report_part_rows` on `at`, reaching `ix_parts_captured_at`; a 30-day",
    "  window over raw rows aggregates every part. After pruning it reads at most one",
    "  `part_hourly` row per camera, hour, model version and label, plus the last day raw.",
    "- After the one-shot roll-up the bench runs VACUUM FULL on `parts`: a line pruned daily",
    "  reuses the freed space, so its heap holds about a day of parts, as here. (Without it",
    "  the 24 h query reads a heap of 29 days' dead space: 3.4 s in the run of 2026-12-02.)",
]


def time_windows(
    engine: Engine, windows: dict[str, reporting.Window], repeats: int
) -> tuple[dict[str, float], dict[str, object]]:
    seconds, results = {}, {}
    for name, window in windows.items():
        call = lambda w=window: reporting.build_parts_report(engine, w)  # noqa: E731
        seconds[name], results[name] = best_of(call, repeats)
        print(f"  {name:<4} build_parts_report {seconds[name] * 1000:8.0f} ms", flush=True)
    return seconds, results


def section(
    args: argparse.Namespace,
    loads: dict[str, float],
    raw: dict[str, float],
    pruned: dict[str, float],
    same: bool,
    server: str,
) -> str:
    cores, load = os.cpu_count(), os.getloadavg()[0]
    lines = [
        f"## Parts report over {args.rows:,} parts (PostgreSQL)",
        "",
        f"Run: `python bench/part_report_bench.py --rows {args.rows}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores "
        f"(load average {load:.1f} at the end), {server}.  ",
        f"{args.rows:,} parts over {DAYS} days, {CAMERAS} cameras, 2 model versions; fill "
        f"{loads['fill']:.0f} s, roll-up of all but the last day into `part_hourly` "
        f"{loads['prune']:.0f} s. Best of {args.repeats} runs. Reports identical before and "
        f"after the roll-up: {'yes' if same else 'NO'}. A 30-day report after pruning: "
        f"{pruned['30d']:.2f} s ({'meets' if pruned['30d'] <= 2 else 'misses'} the 2 s target).",
        "",
        "| `build_parts_report` (2 scans) | last 24 h | 30 days |",
        "|---|---|---|",
        f"| raw parts rows | {raw['24h'] * 1000:.0f} ms | {raw['30d'] * 1000:.0f} ms |",
        f"| after pruning (>1 d in `part_hourly`) | {pruned['24h'] * 1000:.0f} ms "
        f"| {pruned['30d'] * 1000:.0f} ms |",
        "",
        *NOTES,
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    now = utc_now()
    with scratch_schema(args.url, "part_bench") as (engine, server):
        windows = report_windows(now)
        print(f"filling {args.rows:,} parts", flush=True)
        loads = {"fill": fill(engine, sql=FILL, rows=args.rows, now=now)}
        raw, raw_results = time_windows(engine, windows, args.repeats)
        loads["prune"] = roll_up(engine, sql=ROLL_UP, table="parts", now=now)
        print(f"rolled up in {loads['prune']:.1f} s; after prune:", flush=True)
        pruned, pruned_results = time_windows(engine, windows, args.repeats)
        same = raw_results == pruned_results
        print(f"reports identical before and after prune: {same}")
    if not args.no_write:
        text_ = section(args, loads, raw, pruned, same, server)
        write_section(args.out, name="part-report-bench", body=text_, before="report-bench")
        print(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
