"""As users run it: `dagster dev` (webserver + daemon) on a fresh home. Files dropped into
landing/ become a queue, and a label file dropped into labels/inbox/ becomes label-based
estimates, with no run started by hand: only the daemon's sensors and automation. Once on
the DuckDB file, once on a DuckLake (PostgreSQL catalog, S3 data on loopback)."""

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.demo.run import deliver_week_files
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse_location import WarehouseUnavailable
from feedback_pipeline_tests.lake_servers import lake_servers
from feedback_pipeline_tests.ui_check import REPO, webserver

WEEK = DEMO_FIRST_WEEK.isoformat()
BUDGET_S = 420  # the daemon ticks every 15 s; a run starts in its own process


def _wait(what: str, ready, log: Path, budget_s: float = BUDGET_S):
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        found = ready()
        if found is not None and found is not False:
            return found
        time.sleep(3)
    raise AssertionError(f"{what} did not happen within {budget_s} s; daemon log:\n{log.read_text()[-3000:]}")


def _read(home: Path, sql: str) -> pl.DataFrame | None:
    try:  # a run may hold the DuckDB file, or the table may not exist yet: try again on the next poll
        with FeedbackHome(path=str(home)).warehouse(read_only=True) as con:
            return con.execute(sql).pl()
    except (duckdb.Error, WarehouseUnavailable):
        return None


@pytest.fixture(params=["duckdb_file", "ducklake"])
def warehouse_env(request, tmp_path, monkeypatch):
    """The warehouse the daemon's runs write (through the environment, as a deployment sets it)."""
    monkeypatch.delenv("FEEDBACK_PIPELINE_WAREHOUSE", raising=False)
    if request.param == "duckdb_file":
        yield request.param
        return
    with lake_servers(tmp_path / "lake") as lake:
        for name, value in lake.env.items():
            monkeypatch.setenv(name, value)
        yield request.param


@pytest.mark.timeout(900)
def test_files_and_labels_flow_through_the_daemon(tmp_path, warehouse_env):
    home, dagster_home, world = tmp_path / "home", tmp_path / "home" / "dagster", tmp_path / "world"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    generate_world(world, seed=11, weeks=1, turns_per_week=600)
    truth = pl.read_parquet(world / "demo_truth" / "turn_truth.parquet")
    log = tmp_path / "dagster_dev.log"
    os.environ.pop("FEEDBACK_PIPELINE_ALERT_WEBHOOK_URL", None)
    with webserver(home, dagster_home, log, dev=True, timeout=240):
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        deliver_week_files(world, home / "landing", WEEK)

        def queued():
            if WEEK not in instance.get_materialized_partitions(dg.AssetKey("annotation_queue")):
                return None
            return _read(home, f"SELECT * FROM annotation_queue WHERE week = '{WEEK}'")

        queue = _wait("landing files -> annotation_queue", queued, log)
        assert queue.height > 0
        write_demo_labels(queue, truth, home / "labels" / "inbox", WEEK, seed=2)

        def labeled():
            estimates = _read(home, f"SELECT n_labeled FROM quality_estimates WHERE week = '{WEEK}' "
                                    "AND metric = 'failure_rate' AND method = 'hajek'")
            return estimates is not None and estimates.height == 3 and bool((estimates["n_labeled"] > 0).all())

        _wait("label file -> quality_estimates", labeled, log)
        runs = instance.get_runs()
        assert all(r.status != dg.DagsterRunStatus.FAILURE for r in runs), [r.run_id for r in runs]
        launched_by = {r.tags.get("dagster/sensor_name") or ("automation" if r.tags.get("dagster/from_automation_condition") else "?")
                       for r in runs}
        assert {"landing_sensor", "landing_weeks_sensor", "label_inbox_sensor"} <= launched_by
        if warehouse_env == "ducklake":  # every run wrote the lake, none a local DuckDB file
            assert not (home / "warehouse.duckdb").exists()
    shutil.rmtree(world, ignore_errors=True)
