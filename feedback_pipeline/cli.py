"""`feedback-pipeline`: what people do without the UI. It calls Dagster, it does not
re-implement it: every command materializes assets through `dagster.materialize`
on the instance in $DAGSTER_HOME (so runs show in the UI), or reads the warehouse."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta

import dagster as dg

from feedback_pipeline.resources import FeedbackHome


# The terminal shows warnings and errors; the full event log is in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _instance() -> dg.DagsterInstance:
    import os

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def weeks_between(first: date, last: date) -> list[str]:
    out, week = [], first - timedelta(days=first.weekday())
    while week <= last:
        out.append(week.isoformat())
        week += timedelta(days=7)
    return out


def materialize_weeks(weeks: list[str], resources: dict | None = None, selection=None,
                      instance: dg.DagsterInstance | None = None) -> list[dg.ExecuteInProcessResult]:
    """Materialize the weekly assets (and their checks) for each week, in order."""
    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, WEEKLY_SELECTION, default_resources

    instance = instance or _instance()
    results = []
    for week in weeks:
        result = dg.materialize(
            ASSETS + ASSET_CHECKS,
            selection=selection or WEEKLY_SELECTION,
            partition_key=week,
            resources={**default_resources(), **(resources or {})},
            instance=instance,
            raise_on_error=False,
            run_config=QUIET,
        )
        if not result.success:
            raise SystemExit(f"week {week}: run {result.run_id} failed; see the run log in the UI (make ui)")
        results.append(result)
    return results


def materialize_unpartitioned(resources: dict | None = None, selection=None,
                              instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Materialize the assets that are not partitioned by week (labels, calibration, ...)."""
    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, UNPARTITIONED_SELECTION, default_resources

    result = dg.materialize(
        ASSETS + ASSET_CHECKS,
        selection=selection or UNPARTITIONED_SELECTION,
        resources={**default_resources(), **(resources or {})},
        instance=instance or _instance(),
        raise_on_error=False,
        run_config=QUIET,
    )
    if not result.success:
        raise SystemExit(f"run {result.run_id} failed; see the run log in the UI (make ui)")
    return result


def cmd_run(args: argparse.Namespace) -> None:
    last = date.fromisoformat(args.to or args.week)
    weeks = weeks_between(date.fromisoformat(args.week), last)
    materialize_weeks(weeks)
    print(f"materialized {len(weeks)} week(s): {weeks[0]} .. {weeks[-1]}")


def cmd_status(args: argparse.Namespace) -> None:
    home = FeedbackHome()
    with home.warehouse() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "raw_traces" in tables:
            for week, n in con.execute("SELECT week::VARCHAR, count(*) FROM raw_traces GROUP BY 1 ORDER BY 1").fetchall():
                q = con.execute("SELECT count(*) FROM ingest_quarantine WHERE week = ?", [week]).fetchone()[0] \
                    if "ingest_quarantine" in tables else 0
                print(f"week {week}: {n:>8} traces, {q:>5} quarantined")
        else:
            print("no weeks loaded yet: run `feedback-pipeline demo` or `feedback-pipeline run --week ...`")
    print(f"home: {home.root}")


def cmd_demo(args: argparse.Namespace) -> None:
    from feedback_pipeline.demo.run import run_demo

    run_demo(seed=args.seed, turns_per_week=args.turns_per_week)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="feedback-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the demo world and run every stage on it")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--turns-per-week", type=int, default=20_000)
    demo.set_defaults(func=cmd_demo)
    run = sub.add_parser("run", help="materialize the weekly assets for a week or a range")
    run.add_argument("--week", required=True, help="a Monday, e.g. 2026-11-16")
    run.add_argument("--to", help="last week of a range (inclusive)")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="weeks loaded, quarantine counts")
    status.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
