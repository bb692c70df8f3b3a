"""Dagster's bookkeeping cost per run and per automation evaluation, by instance storage.

Run: `.venv/bin/python benchmarks/dagster_storage.py [--runs 20]`.

Each storage gets a fresh DAGSTER_HOME and the same work: `--runs` one-partition runs of
a weekly asset with a blocking check and a downstream asset, then 10 automation
evaluations over the materialized partitions. Printed: seconds per run, per
evaluation, and per pair of event-log queries (the latest materialization and the
materialized partitions, as the UI and every automation tick ask).
Storages: Dagster's default SQLite ("default"), the repo's dagster.yaml (SQLite with
kept engines, run shards from a template, compute logs mirrored by a thread:
feedback_pipeline/dagster_storage.py), and an in-memory instance (the floor).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
WEEKS = dg.WeeklyPartitionsDefinition(start_date="2025-01-06")


@dg.asset(partitions_def=WEEKS, automation_condition=dg.AutomationCondition.eager())
def weekly_rows(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"week": context.partition_key})


@dg.asset_check(asset=weekly_rows, blocking=True)
def weekly_rows_valid() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset(partitions_def=WEEKS, deps=[weekly_rows], automation_condition=dg.AutomationCondition.eager())
def weekly_summary() -> None:
    return None


def measure(instance: dg.DagsterInstance, runs: int) -> tuple[float, float, float]:
    weeks = WEEKS.get_partition_keys()[:runs]
    started = time.perf_counter()
    for week in weeks:
        assert dg.materialize([weekly_rows, weekly_rows_valid, weekly_summary], partition_key=week,
                              instance=instance, run_config=QUIET).success
    per_run = (time.perf_counter() - started) / runs
    defs = dg.Definitions(assets=[weekly_rows, weekly_summary], asset_checks=[weekly_rows_valid])
    cursor, started = None, time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    per_eval = (time.perf_counter() - started) / 10
    started = time.perf_counter()
    for _ in range(50):
        instance.get_latest_materialization_event(dg.AssetKey("weekly_rows"))
        instance.get_materialized_partitions(dg.AssetKey("weekly_rows"))
    per_query_pair = (time.perf_counter() - started) / 50
    return per_run, per_eval, per_query_pair


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"{'storage':<28}{'s/run':>8}{'s/evaluation':>14}{'ms/2 queries':>14}")
    for name in ("default SQLite", "dagster.yaml", "in memory"):
        home = Path(tempfile.mkdtemp(prefix="fp-storage-"))
        try:
            if name == "in memory":
                instance = dg.DagsterInstance.ephemeral()
            else:
                if name.startswith("dagster.yaml"):
                    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
                os.environ["DAGSTER_HOME"] = str(home)
                instance = dg.DagsterInstance.get()
            with instance:
                per_run, per_eval, per_pair = measure(instance, args.runs)
            print(f"{name:<28}{per_run:>8.3f}{per_eval:>14.3f}{per_pair * 1000:>14.1f}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
