"""A real process that materializes weeks, for the crash and concurrency tests.

    python -m feedback_pipeline_tests.crash_helper --home H --week 2026-10-05 \
        [--kill-point POINT --signal FILE] [--go FILE] [--report FILE] [--refused FILE]

It runs `feedback_pipeline.cli.materialize_weeks` on the instance in $DAGSTER_HOME
(ephemeral without it). With `--kill-point`, it writes `--signal` at that point of the
ingest write so the test knows when to SIGKILL it:

- `after_first_table`: inside the ingest transaction, after this week of `raw_traces`
  was deleted and re-inserted but before `ingest_quarantine` and COMMIT; the process
  then waits there to be killed (deterministic);
- `in_insert`: as the transaction begins; the process carries on writing;
- `in_commit`: after both tables were written, just before COMMIT; it carries on;
- `after_commit`: COMMIT returned (the week is in DuckDB's write-ahead log, maybe not
  yet checkpointed); the process waits there to be killed.

Hooks wrap the names the ingest asset module calls (`transaction`, `replace_week`),
so the code under test is the project's own, unchanged. `--go` waits for a file
before starting (a start barrier for two processes); `--report` writes JSON: the
run ids, when the materialization started and ended, the intervals this process held
the warehouse open and how many times DuckDB refused to open it because of its lock
(`--refused` is touched at the first refusal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

KILL_POINTS = ("after_first_table", "in_insert", "in_commit", "after_commit")
SELECTIONS = ("ingest", "scoring", "sampling")


def _signal(path: Path, point: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "point": point, "at": time.time()}))
    os.replace(tmp, path)  # the test sees the file whole or not at all


def _wait_to_be_killed() -> None:
    time.sleep(120)  # the test kills us here; if it does not, fail loudly
    raise SystemExit("crash_helper: nobody killed me")


def install_kill_hook(point: str, signal_file: Path) -> None:
    """Signal (and for `after_first_table`, wait to be killed) at `point` of the ingest write."""
    import feedback_pipeline.ingest.assets as ingest_assets

    real_transaction, real_replace_week = ingest_assets.transaction, ingest_assets.replace_week

    @contextmanager
    def transaction(con):
        if point == "in_insert":
            _signal(signal_file, point)
        with real_transaction(con):
            yield
            if point == "in_commit":
                _signal(signal_file, point)
        if point == "after_commit":
            _signal(signal_file, point)
            _wait_to_be_killed()

    def replace_week(con, table, *args, **kwargs):
        rows = real_replace_week(con, table, *args, **kwargs)
        if point == "after_first_table" and table == "raw_traces":
            _signal(signal_file, point)
            _wait_to_be_killed()
        return rows

    ingest_assets.transaction, ingest_assets.replace_week = transaction, replace_week


def install_probes(report: dict, refused_marker: Path | None = None) -> None:
    """Count DuckDB lock refusals (touching `refused_marker` at the first) and record
    when the warehouse was held open."""
    import duckdb

    from feedback_pipeline.resources import FeedbackHome

    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        try:
            return real_connect(*args, **kwargs)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                report["lock_refusals"] += 1
                if refused_marker is not None:
                    refused_marker.touch()
            raise

    duckdb.connect = connect  # dagster_duckdb calls `duckdb.connect` through the module
    real_warehouse = FeedbackHome.warehouse

    @contextmanager
    def warehouse(self, *args, **kwargs):
        with real_warehouse(self, *args, **kwargs) as con:
            opened = time.time()
            try:
                yield con
            finally:
                report["held"].append([opened, time.time()])

    FeedbackHome.warehouse = warehouse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--week", action="append", required=True)
    parser.add_argument("--groups", default=",".join(SELECTIONS), help="asset groups to materialize")
    parser.add_argument("--kill-point", choices=KILL_POINTS)
    parser.add_argument("--signal", type=Path)
    parser.add_argument("--go", type=Path)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--refused", type=Path, help="file touched when DuckDB first refuses the lock")
    args = parser.parse_args(argv)

    import dagster as dg

    from feedback_pipeline.runs import materialize_weeks
    from feedback_pipeline.resources import FeedbackHome
    from feedback_pipeline.scoring.judge import JudgeResource

    report = {"pid": os.getpid(), "weeks": args.week, "lock_refusals": 0, "held": [], "run_ids": []}
    install_probes(report, args.refused)
    if args.kill_point:
        install_kill_hook(args.kill_point, args.signal)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    resources = {"home": FeedbackHome(path=args.home), "judge": JudgeResource()}
    selection = dg.AssetSelection.groups(*args.groups.split(","))
    if args.go:
        deadline = time.monotonic() + 60
        while not args.go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("crash_helper: no go signal within 60 s")
            time.sleep(0.01)
    report["started"] = time.time()
    try:
        results = materialize_weeks(args.week, resources=resources, selection=selection, instance=instance)
        report["run_ids"] = [r.run_id for r in results]
        report["success"] = all(r.success for r in results)
    except SystemExit as exc:  # materialize_weeks exits with the failed run's id
        report["success"], report["error"] = False, str(exc)
    report["ended"] = time.time()
    if args.report:
        args.report.write_text(json.dumps(report))
    sys.exit(0 if report["success"] else 1)


if __name__ == "__main__":
    main()
