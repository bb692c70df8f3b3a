"""The warehouse on DuckLake, for real: the catalog in PostgreSQL (`pgserver`), the Parquet
data in an S3-compatible server on loopback (moto, server mode), extensions loaded from
their PyPI packages.

- The demo world's weeks backfilled by 3 concurrent runs (worker processes on a Dagster
  instance whose `warehouse` pool admits 3) end with every table identical, row for row,
  to a sequential run on the DuckDB file.
- A reader attached read-only during those writes only ever sees whole weeks.
- A writer SIGKILLed mid-transaction leaves no partial week; a re-run completes.
- The catalog server restarted between runs loses nothing; while it is down, opening the
  warehouse fails with a message naming the lake and no secret.
- Writers that race on one table are retried until both commits land, never half-applied.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.runs import backfill_weeks, materialize_weeks
from feedback_pipeline.warehouse import replace_week_frame, warehouse_tables
from feedback_pipeline.warehouse_location import (WarehouseUnavailable, connect, extension_file,
                                                  location_from_env, mask_secrets, s3_secret_sql)
from feedback_pipeline_tests.crash_helper import KILL_POINTS
from feedback_pipeline_tests.lake_servers import S3_SECRET, lake_servers
from feedback_pipeline_tests.test_crash_safety import dagster_home, helper, output, wait_for

WEEKS = [(DEMO_FIRST_WEEK + timedelta(days=7 * i)).isoformat() for i in range(3)]
# Columns that say when or where a run wrote, not what: they differ between any two runs.
RUN_COLUMNS = {"inode", "modified_ns"}
LAKE_ENV = ("FEEDBACK_PIPELINE_WAREHOUSE", "FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    with lake_servers(tmp_path_factory.mktemp("lake")) as lake:
        yield lake


def use(monkeypatch, home: Path, env: dict[str, str] | None) -> FeedbackHome:
    """Point this process (and the workers it spawns) at `home` and a lake (None: the file)."""
    monkeypatch.setenv("FEEDBACK_PIPELINE_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # make exports one for the UI; runs here are ephemeral
    for name in LAKE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return FeedbackHome(path=str(home))


def tables(home: FeedbackHome) -> dict[str, pl.DataFrame]:
    """Every warehouse table, without the columns that record when it was written, sorted."""
    out = {}
    with home.warehouse(read_only=True) as con:
        for table in sorted(warehouse_tables(con)):
            frame = con.execute(f"SELECT * FROM {table}").pl()
            keep = [c for c in frame.columns if not c.endswith("_at") and c not in RUN_COLUMNS]
            frame = frame.select(keep)
            out[table] = frame.sort(keep) if frame.height else frame
    return out


class Reader(threading.Thread):
    """An analyst's session: attaches the lake read-only, again and again, counting the
    rows of each week of the weekly tables."""

    TABLES = ("raw_traces", "ingest_quarantine", "automated_scores", "annotation_queue")

    def __init__(self, home: FeedbackHome):
        super().__init__(daemon=True)
        self.home, self.stop, self.seen, self.errors = home, threading.Event(), [], []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.home.warehouse(read_only=True) as con:
                    present = warehouse_tables(con)
                    for table in self.TABLES:
                        if table in present:
                            for week, n in con.execute(
                                    f"SELECT week::VARCHAR, count(*) FROM {table} GROUP BY 1").fetchall():
                                self.seen.append((table, week, n))
            except WarehouseUnavailable as exc:  # the catalog is made by the first writer
                self.errors.append(str(exc))
            time.sleep(0.05)


@pytest.fixture(scope="module")
def backfilled(lake, tmp_path_factory):
    """The same world run sequentially on the DuckDB file and by 3 writers on the lake."""
    root = tmp_path_factory.mktemp("backfill")
    generate_world(root / "world", seed=21, weeks=len(WEEKS), turns_per_week=1_500)
    with pytest.MonkeyPatch.context() as mp:
        file_home = use(mp, shutil.copytree(root / "world", root / "file"), None)
        with dg.DagsterInstance.from_config(str(dagster_home(root / "dagster_file"))) as instance:
            materialize_weeks(WEEKS, instance=instance)
        expected = tables(file_home)

        env = lake.fresh("backfill")
        lake_home = use(mp, shutil.copytree(root / "world", root / "lake"), env)
        mp.setenv("DAGSTER_HOME", str(dagster_home(root / "dagster_lake")))
        reader = Reader(lake_home)
        reader.start()
        started = time.monotonic()
        try:
            with dg.DagsterInstance.get() as instance:
                backfill_weeks(WEEKS, writers=3, instance=instance)
                slots = instance.event_log_storage.get_concurrency_info("warehouse").slot_count
        finally:
            reader.stop.set()
            reader.join(timeout=30)
        seconds = time.monotonic() - started
        actual = tables(lake_home)
    return dict(expected=expected, actual=actual, reader=reader, slots=slots, env=env, home=lake_home,
                seconds=seconds, root=root)


def test_three_writers_end_like_a_sequential_run_on_the_duckdb_file(backfilled, lake):
    expected, actual = backfilled["expected"], backfilled["actual"]
    assert backfilled["slots"] == 3, "the backfill sets the warehouse pool to its writers"
    assert set(actual) == set(expected)
    assert expected["raw_traces"].height > 3_000 and expected["ingest_quarantine"].height > 0
    for table, frame in expected.items():
        assert actual[table].columns == frame.columns, table
        assert actual[table].equals(frame), f"{table} differs between the lake and the file"
    # The weeks' Parquet files are in the object store, under the lake's prefix.
    assert any(key.endswith(".parquet") for key in lake.s3_objects("backfill/"))
    print(f"3 writers on DuckLake: {backfilled['seconds']:.1f} s for {len(WEEKS)} weeks")


def test_a_reader_during_the_writes_only_sees_whole_weeks(backfilled):
    reader, final = backfilled["reader"], backfilled["actual"]
    whole = {(t, str(w)): n for t in Reader.TABLES
             for w, n in final[t].group_by("week").len().iter_rows()}
    assert len(reader.seen) >= 20, f"the reader hardly read during the backfill ({len(reader.seen)} counts)"
    partial = [(t, w, n) for t, w, n in reader.seen if whole.get((t, w)) != n]
    assert not partial, f"a reader saw a week half written: {partial[:5]}"
    assert not any(S3_SECRET in e for e in reader.errors)


def test_a_catalog_restart_loses_nothing_and_an_outage_says_where(backfilled, lake, monkeypatch):
    home = use(monkeypatch, backfilled["home"].root, backfilled["env"])
    lake.stop_catalog()
    try:
        with pytest.raises(WarehouseUnavailable) as outage:
            with home.warehouse():
                pass
        message = str(outage.value)
        assert "ducklake:postgres:" in message and "cannot open the DuckLake warehouse" in message
        assert S3_SECRET not in message
    finally:
        lake.start_catalog()
    home = use(monkeypatch, backfilled["home"].root, lake.env_of("backfill"))
    assert _same(tables(home), backfilled["actual"])
    # And the next run writes as before (a week re-run: same rows).
    materialize_weeks(WEEKS[:1], selection=dg.AssetSelection.assets("raw_traces", "ingest_quarantine"))
    assert _same(tables(home), backfilled["actual"])


def _same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> bool:
    differ = sorted(set(a) ^ set(b)) + [t for t in sorted(set(a) & set(b)) if not a[t].equals(b[t])]
    if differ:
        print("tables that differ:", differ, {t: (a[t].height if t in a else None, b[t].height if t in b else None)
                                              for t in differ})
    return not differ


@pytest.mark.parametrize("kill_point", ["after_first_table", "in_commit"])
def test_sigkill_mid_transaction_leaves_no_partial_week(lake, tmp_path, monkeypatch, kill_point):
    assert kill_point in KILL_POINTS
    generate_world(tmp_path / "world", seed=22, weeks=1, turns_per_week=1_000)
    reference = use(monkeypatch, shutil.copytree(tmp_path / "world", tmp_path / "reference"), None)
    materialize_weeks(WEEKS[:1], selection=dg.AssetSelection.groups("ingest"))
    expected = tables(reference)

    env = lake.fresh(f"kill_{kill_point}")
    home = use(monkeypatch, shutil.copytree(tmp_path / "world", tmp_path / "home"), env)
    signal_file = tmp_path / "signal"
    proc = helper(home.root, WEEKS[:1], dagster_home(tmp_path / "dagster"), "--kill-point", kill_point,
                  "--signal", str(signal_file), groups=["ingest"])
    wait_for(signal_file, proc, timeout=120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, output(proc)

    with home.warehouse(read_only=True) as con:  # the first write of the week never committed
        present = warehouse_tables(con)
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("raw_traces", "ingest_quarantine") if t in present}
    assert all(n == 0 for n in rows.values()), f"a killed transaction left rows behind: {rows}"

    materialize_weeks(WEEKS[:1], selection=dg.AssetSelection.groups("ingest"))
    assert _same(tables(home), expected)


def test_racing_writers_are_retried_until_every_week_lands(lake, tmp_path, monkeypatch):
    """Two writers replace different weeks of one table 10 times each: DuckLake refuses the
    commit that raced (an insert into a table the other deleted from); it is re-run whole."""
    home = use(monkeypatch, tmp_path / "home", lake.fresh("race"))
    weeks = [date(2026, 1, 5), date(2026, 1, 12)]
    errors, conflicts = [], []

    def writer(week: date) -> None:
        try:
            with home.warehouse() as con:
                for i in range(10):
                    frame = pl.DataFrame({"week": [week] * (100 + i), "value": list(range(100 + i))})
                    replace_week_frame(con, "race_table", week, frame)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    import feedback_pipeline.warehouse as warehouse

    real = warehouse.is_write_conflict
    monkeypatch.setattr(warehouse, "is_write_conflict",
                        lambda exc: real(exc) and (conflicts.append(1) or True))
    with home.warehouse() as con:  # the table exists before the race
        replace_week_frame(con, "race_table", weeks[0], pl.DataFrame({"week": [weeks[0]], "value": [0]}))
    threads = [threading.Thread(target=writer, args=(w,)) for w in weeks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with home.warehouse(read_only=True) as con:
        counts = dict(con.execute("SELECT week, count(*) FROM race_table GROUP BY 1").fetchall())
    assert counts == {weeks[0]: 109, weeks[1]: 109}
    print(f"{len(conflicts)} commit(s) raced and were re-run")


def test_the_setting_chooses_the_warehouse(tmp_path, monkeypatch):
    monkeypatch.delenv("FEEDBACK_PIPELINE_WAREHOUSE", raising=False)
    assert location_from_env(tmp_path).file == tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("FEEDBACK_PIPELINE_WAREHOUSE", "ducklake:postgres:dbname=lake host=db password=hunter2")
    monkeypatch.delenv("FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH", raising=False)
    location = location_from_env(tmp_path)
    assert location.multi_writer and location.data_path == str(tmp_path / "warehouse_data") + "/"
    assert "hunter2" not in location.describe() and "password=***" in location.describe()
    monkeypatch.setenv("FEEDBACK_PIPELINE_WAREHOUSE", "postgres://u:hunter2@db/lake")
    with pytest.raises(WarehouseUnavailable) as bad:
        location_from_env(tmp_path)
    assert "hunter2" not in str(bad.value) and "ducklake:postgres:" in str(bad.value)
    assert mask_secrets("s3://key:secret@host/x") == "s3://key:***@host/x"


def test_a_local_lake_with_extensions_from_their_packages_and_no_downloads(tmp_path, monkeypatch):
    for name in ("ducklake", "postgres_scanner", "httpfs"):
        assert extension_file(name).name == f"{name}.duckdb_extension"
    monkeypatch.setenv("FEEDBACK_PIPELINE_WAREHOUSE", f"ducklake:{tmp_path / 'catalog.ducklake'}")
    monkeypatch.setenv("FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH", str(tmp_path / "data") + "/")
    location = location_from_env(tmp_path)
    assert location.is_lake and not location.multi_writer
    con = connect(location)
    try:
        assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone()[0] is False
        assert con.execute("SELECT current_database()").fetchone()[0] == "warehouse"
        replace_week_frame(con, "t", date(2026, 1, 5), pl.DataFrame({"week": [date(2026, 1, 5)], "v": [1]}))
        assert warehouse_tables(con) == {"t"}
        # A local catalog file is attached once per process: a read in the middle of a
        # writing step (the demo's, a sensor's) goes through the same attachment.
        reader = connect(location, read_only=True)
        assert reader.execute("SELECT v FROM t").fetchall() == [(1,)]
        reader.close()
    finally:
        con.close()


def test_s3_credentials_reach_duckdb_as_a_secret_only(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA_TEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "it's-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    sql = s3_secret_sql()
    assert "ENDPOINT '127.0.0.1:9000'" in sql and "USE_SSL False" in sql and "'it''s-secret'" in sql
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    con.execute(f"LOAD '{extension_file('httpfs')}'")  # the s3 secret type is httpfs's
    con.execute(sql)  # valid DuckDB
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert s3_secret_sql() is None


def test_anyone_can_check_from_the_lake_history_that_no_snapshot_changed(lake, tmp_path, monkeypatch):
    """Re-writing a snapshot with the same content leaves its hash history flat; a changed
    one shows up, with the versions between which it changed."""
    from feedback_pipeline.evalset.history import changed_snapshots, manifest_history

    home = use(monkeypatch, tmp_path / "home", lake.fresh("history"))
    w1, w2 = date(2026, 1, 5), date(2026, 1, 12)

    def manifest(week: date, digest: str) -> pl.DataFrame:
        return pl.DataFrame({"snapshot_id": [f"refunds@{week}"], "agent_id": ["refunds"], "week": [week],
                             "content_hash": [digest * 64], "n_cases": [3]})

    with home.warehouse() as con:
        replace_week_frame(con, "eval_set_manifests", w1, manifest(w1, "a"))
        replace_week_frame(con, "eval_set_manifests", w2, manifest(w2, "b"))
        replace_week_frame(con, "eval_set_manifests", w1, manifest(w1, "a"))  # a re-run: same content
        assert changed_snapshots(manifest_history(con)).is_empty()
        replace_week_frame(con, "eval_set_manifests", w2, manifest(w2, "c"))  # someone changed week 2
        history = manifest_history(con)
    changed = changed_snapshots(history)
    assert changed["snapshot_id"].to_list() == [f"refunds@{w2}"]
    assert changed["hashes"].to_list() == [["b" * 64, "c" * 64]]
    assert history["version"].n_unique() >= 4


def test_the_duckdb_file_has_no_history_to_audit(home):
    from feedback_pipeline.evalset.history import manifest_history

    with home.warehouse() as con, pytest.raises(ValueError, match="DuckLake"):
        manifest_history(con)


def test_on_a_postgres_lake_weekly_writers_and_serial_writers_have_their_own_pools():
    import json
    import subprocess
    import sys

    script = ("import json; from feedback_pipeline.definitions import ASSETS; "
              "print(json.dumps({k.to_user_string(): a.op.pool for a in ASSETS for k in a.keys}))")
    env = {**os.environ, "FEEDBACK_PIPELINE_WAREHOUSE": "ducklake:postgres:dbname=lake", "PYTHONWARNINGS": "ignore"}
    pools = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True).stdout)
    assert {a for a, p in pools.items() if p == "warehouse_serial"} == {
        "landing_scan", "human_labels", "label_quarantine", "label_agreement", "judge_calibration",
        "label_studio_adjudication", "release_changes", "impact_metrics", "loop_health",
        "eval_set_snapshots", "eval_set_manifests"}
    assert {a for a, p in pools.items() if p == "warehouse"} == {
        "raw_traces", "ingest_quarantine", "automated_scores", "annotation_queue", "label_studio_tasks",
        "quality_estimates", "heldout_replay", "weekly_report"}


def test_several_writers_on_the_duckdb_file_are_refused_with_what_to_set(tmp_path, monkeypatch):
    use(monkeypatch, tmp_path / "home", None)
    with pytest.raises(SystemExit, match="admits one writing process; set FEEDBACK_PIPELINE_WAREHOUSE"):
        backfill_weeks(WEEKS[:1], writers=2)
