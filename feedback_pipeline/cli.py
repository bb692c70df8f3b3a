"""`feedback-pipeline`: what people do without the UI. It calls Dagster, it does not
re-implement it: every command materializes assets through `dagster.materialize`
on the instance in $DAGSTER_HOME (so runs show in the UI), or reads the warehouse."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

import dagster as dg

from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.runs import backfill_weeks, materialize_unpartitioned, materialize_weeks
from feedback_pipeline.weeks import weeks_between


def cmd_run(args: argparse.Namespace) -> None:
    last = date.fromisoformat(args.to or args.week)
    weeks = weeks_between(date.fromisoformat(args.week), last)
    if args.writers > 1:
        backfill_weeks(weeks, args.writers)
    else:
        materialize_weeks(weeks)
    print(f"materialized {len(weeks)} week(s): {weeks[0]} .. {weeks[-1]}")


def cmd_status(args: argparse.Namespace) -> None:
    from feedback_pipeline.warehouse import warehouse_tables

    home = FeedbackHome()
    if not home.warehouse_exists():
        print(f"no warehouse yet at {home.warehouse_path}: run `feedback-pipeline demo` or `run --week ...`")
        return
    with home.warehouse(read_only=True) as con:
        tables = warehouse_tables(con)
        if "raw_traces" in tables:
            for week, n in con.execute("SELECT week::VARCHAR, count(*) FROM raw_traces GROUP BY 1 ORDER BY 1").fetchall():
                q = con.execute("SELECT count(*) FROM ingest_quarantine WHERE week = ?", [week]).fetchone()[0] \
                    if "ingest_quarantine" in tables else 0
                print(f"week {week}: {n:>8} traces, {q:>5} quarantined")
        else:
            print("no weeks loaded yet: run `feedback-pipeline demo` or `feedback-pipeline run --week ...`")
        if "human_labels" in tables:
            current, files = con.execute(
                "SELECT count(*) FILTER (WHERE is_current), count(DISTINCT file_sha256) FROM human_labels").fetchone()
            print(f"labels: {current} current from {files} file(s)")
        from feedback_pipeline.files import file_sha256
        from feedback_pipeline.labels.inbox import inbox_files

        seen = set()
        for table in ("human_labels", "label_quarantine"):
            if table in tables:
                seen |= {r[0] for r in con.execute(f"SELECT DISTINCT file_sha256 FROM {table}").fetchall()}
        pending = [p.name for p in inbox_files(home.labels_inbox) if file_sha256(p) not in seen]
        print(f"pending label files in the inbox: {len(pending)} {pending[:10]}")
        if "eval_set_manifests" in tables:
            for agent, week, n, digest in con.execute(
                    "SELECT agent_id, week::VARCHAR, n_cases, content_hash FROM eval_set_manifests "
                    "QUALIFY week = max(week) OVER (PARTITION BY agent_id) ORDER BY agent_id").fetchall():
                print(f"last snapshot {agent}@{week}: {n} cases, sha256 {digest[:12]}")
    print(f"home: {home.root}")


def cmd_import_labels(args: argparse.Namespace) -> None:
    """Copy label files into the inbox (never overwriting) and run the import."""
    import hashlib
    import shutil
    from pathlib import Path

    home = FeedbackHome()
    sources = [p for p in map(Path, args.paths) for p in ([p] if p.is_file() else sorted(p.rglob("*")))
               if p.is_file()]
    for source in sources:
        target = home.labels_inbox / source.name
        if target.exists() and target.read_bytes() != source.read_bytes():
            digest = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
            target = target.with_name(f"{target.stem}-{digest}{target.suffix}")
        shutil.copyfile(source, target)
    result = materialize_unpartitioned(selection=dg.AssetSelection.assets("human_labels", "judge_calibration")
                                       .required_multi_asset_neighbors())
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "human_labels"]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    print(f"{len(sources)} file(s) copied to {home.labels_inbox}; imported {meta['files_imported']} new: "
          f"read {meta['read']} = accepted {meta['accepted']} + duplicates {meta['duplicates']} "
          f"+ quarantined {meta['quarantined']} (see label_quarantine)")


def cmd_export_queue(args: argparse.Namespace) -> None:
    """Re-materialize the week's queue; its exports are written under exports/annotation_queue/<week>/."""
    materialize_weeks([args.week], selection=dg.AssetSelection.assets("annotation_queue"))
    print(f"queue exports: {FeedbackHome().exports / 'annotation_queue' / args.week}")


def cmd_audit_snapshots(args: argparse.Namespace) -> None:
    """Every eval-set snapshot's content hash at every version of the lake: unchanged or not."""
    from feedback_pipeline.evalset.history import changed_snapshots, manifest_history

    with FeedbackHome().warehouse(read_only=True) as con:
        history = manifest_history(con)
    changed = changed_snapshots(history)
    print(f"{history['snapshot_id'].n_unique()} snapshot(s) checked at {history['version'].n_unique()} "
          f"version(s) of the lake: {changed.height} changed")
    for row in changed.iter_rows(named=True):
        print(f"CHANGED {row['snapshot_id']}: {len(row['hashes'])} hashes between versions "
              f"{row['first_version']} and {row['last_version']}")
    if changed.height:
        raise SystemExit(1)


def cmd_pools(args: argparse.Namespace) -> None:
    """Set the instance's warehouse pool limits (what a deployment does once)."""
    from feedback_pipeline import pools
    from feedback_pipeline.runs import current_instance, set_pool_limits

    location = FeedbackHome().warehouse_location
    if args.writers > 1 and not location.multi_writer:
        raise SystemExit(f"--writers {args.writers}: the warehouse {location.describe()} admits one writing process")
    with current_instance() as instance:
        set_pool_limits(instance, args.writers)
        for pool in sorted({pools.WEEKLY, pools.SERIAL}):
            print(f"pool {pool}: {instance.event_log_storage.get_concurrency_info(pool).slot_count} slot(s)")


def cmd_demo(args: argparse.Namespace) -> None:
    from feedback_pipeline.demo.run import run_demo

    run_demo(seed=args.seed, **({"turns_per_week": args.turns_per_week} if args.turns_per_week else {}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="feedback-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the demo world and run every stage on it")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--turns-per-week", type=int, default=None, help="default: demo.run.DEMO_TURNS_PER_WEEK")
    demo.set_defaults(func=cmd_demo)
    run = sub.add_parser("run", help="materialize the weekly assets for a week or a range")
    run.add_argument("--week", required=True, help="a Monday, e.g. 2026-11-16")
    run.add_argument("--to", help="last week of a range (inclusive)")
    run.add_argument("--writers", type=int, default=int(os.environ.get("FEEDBACK_PIPELINE_WAREHOUSE_WRITERS", "1")),
                     help="weeks written at once (a DuckLake warehouse on PostgreSQL; default "
                          "$FEEDBACK_PIPELINE_WAREHOUSE_WRITERS or 1)")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="weeks loaded, quarantine counts, labels, last snapshot per agent")
    status.set_defaults(func=cmd_status)
    imp = sub.add_parser("import-labels", help="copy label files (or folders) to labels/inbox and import them")
    imp.add_argument("paths", nargs="+")
    imp.set_defaults(func=cmd_import_labels)
    exp = sub.add_parser("export-queue", help="(re)build and export one week's annotation queue")
    exp.add_argument("--week", required=True)
    exp.set_defaults(func=cmd_export_queue)
    audit = sub.add_parser("audit-snapshots", help="check from a DuckLake's history that no eval-set snapshot changed")
    audit.set_defaults(func=cmd_audit_snapshots)
    pool = sub.add_parser("pools", help="set the warehouse pools' limits on the Dagster instance")
    pool.add_argument("--writers", type=int, required=True, help="weekly writers at once (1 on a DuckDB file)")
    pool.set_defaults(func=cmd_pools)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
