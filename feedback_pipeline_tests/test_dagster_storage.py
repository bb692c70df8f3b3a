"""The repo's dagster.yaml storage (Dagster's SQLite storage with kept engines): runs and
events written through it are read back by another instance (as the UI and the daemon
read a run worker's writes), runs whose engines were evicted still read, and a home made
with Dagster's default SQLite storage keeps its history."""

import shutil
from pathlib import Path

import dagster as dg
from feedback_pipeline.dagster_storage import KEPT_ENGINES, PooledSqliteEventLogStorage, PooledSqliteRunStorage

REPO = Path(__file__).resolve().parents[1]
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=DAYS)
def counted(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"day": context.partition_key})


@dg.asset_check(asset=counted, blocking=True)
def counted_has_day(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _home(tmp_path: Path, monkeypatch, config: str | None) -> Path:
    home = tmp_path / "dagster"
    home.mkdir(exist_ok=True)
    if config:
        shutil.copy(config, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _materialize(instance: dg.DagsterInstance, days: list[str]) -> list[str]:
    run_ids = []
    for day in days:
        result = dg.materialize([counted, counted_has_day], partition_key=day, instance=instance)
        assert result.success
        run_ids.append(result.run_id)
    return run_ids


def test_runs_and_events_written_through_kept_engines_read_back_everywhere(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch, REPO / "dagster.yaml")
    days = [f"2026-01-{d:02d}" for d in range(1, KEPT_ENGINES + 5)]  # more runs than engines kept
    with dg.DagsterInstance.get() as writer:
        assert isinstance(writer.run_storage, PooledSqliteRunStorage)
        assert isinstance(writer.event_log_storage, PooledSqliteEventLogStorage)
        run_ids = _materialize(writer, days)
        assert len(writer.event_log_storage._engines) <= KEPT_ENGINES
        # The first runs' engines were evicted; their events are read through new ones.
        assert any(r.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS
                   for r in writer.all_logs(run_ids[0]) if r.dagster_event)
    # Dagster's file layout, as with no `storage:` key.
    assert (home / "history" / "runs.db").is_file()
    assert (home / "history" / "runs" / "index.db").is_file()
    assert all((home / "history" / "runs" / f"{run_id}.db").is_file() for run_id in run_ids)
    with dg.DagsterInstance.get() as reader:
        assert {r.run_id for r in reader.get_runs()} == set(run_ids)
        assert all(reader.get_run_by_id(r).status == dg.DagsterRunStatus.SUCCESS for r in run_ids)
        assert reader.get_materialized_partitions(dg.AssetKey("counted")) == set(days)
        materialization = reader.get_latest_materialization_event(dg.AssetKey("counted")).asset_materialization
        assert materialization.partition == days[-1] and materialization.metadata["day"].value == days[-1]
        check = reader.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("counted"), "counted_has_day")])
        assert check[dg.AssetCheckKey(dg.AssetKey("counted"), "counted_has_day")].run_id == run_ids[-1]


def test_a_home_made_with_dagsters_default_storage_keeps_its_history(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch, None)
    with dg.DagsterInstance.get() as default:
        assert not isinstance(default.run_storage, PooledSqliteRunStorage)
        old = _materialize(default, ["2026-02-01"])
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.get() as pooled:
        assert isinstance(pooled.run_storage, PooledSqliteRunStorage)
        new = _materialize(pooled, ["2026-02-02"])
        assert {r.run_id for r in pooled.get_runs()} == {*old, *new}
        assert pooled.get_materialized_partitions(dg.AssetKey("counted")) == {"2026-02-01", "2026-02-02"}


def test_wipe_leaves_no_connection_on_deleted_files(tmp_path, monkeypatch):
    _home(tmp_path, monkeypatch, REPO / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        _materialize(instance, ["2026-03-01"])
        instance.wipe()
        assert instance.get_materialized_partitions(dg.AssetKey("counted")) == set()
        _materialize(instance, ["2026-03-02"])
        assert instance.get_materialized_partitions(dg.AssetKey("counted")) == {"2026-03-02"}


def test_an_instance_loaded_from_its_folder_uses_that_folder(tmp_path, monkeypatch):
    """`DagsterInstance.from_config(dir)` (no DAGSTER_HOME) stores in `dir`, as the default does."""
    home = _home(tmp_path, monkeypatch, REPO / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        [run_id] = _materialize(instance, ["2026-04-01"])
    assert (home / "history" / "runs" / f"{run_id}.db").is_file()
    assert not (tmp_path / "elsewhere").exists()


def _shape(path: Path) -> tuple:
    """A SQLite file's schema, alembic stamp and journal mode."""
    import sqlite3

    with sqlite3.connect(path) as con:
        schema = sorted(con.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
        stamp = con.execute("SELECT version_num FROM alembic_version").fetchall()
        mode = con.execute("PRAGMA journal_mode").fetchone()
    return schema, stamp, mode


def test_run_shards_copied_from_the_template_are_those_dagster_makes(tmp_path, monkeypatch):
    """New run shards are copies of one made by Dagster's `_initdb`: same tables, indexes,
    alembic revision and WAL mode as a shard Dagster's default storage makes."""
    home = _home(tmp_path, monkeypatch, None)
    with dg.DagsterInstance.get() as default:
        [by_dagster] = _materialize(default, ["2026-05-01"])
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.get() as pooled:
        copied = _materialize(pooled, ["2026-05-02", "2026-05-03"])
        assert pooled.event_log_storage._template is not None  # made once, for both runs
        assert [r.dagster_event.event_type for r in pooled.all_logs(copied[0]) if r.dagster_event][-1] == \
            dg.DagsterEventType.RUN_SUCCESS
    shards = home / "history" / "runs"
    assert _shape(shards / f"{copied[0]}.db") == _shape(shards / f"{by_dagster}.db")
    assert _shape(shards / f"{copied[1]}.db")[1] and _shape(shards / f"{copied[1]}.db")[2] == ("wal",)
    assert not list(shards.glob("*.partial"))


MIRROR_SCRIPT = '''
import os, sys
import dagster as dg

@dg.asset
def noisy():
    print("from python")
    os.system("echo from a child process")
    os.write(1, b"from the descriptor\\n")
    print("x" * 300_000)  # more than a pipe holds
    sys.stderr.write("to stderr\\n")

with dg.DagsterInstance.get() as instance:
    result = dg.materialize([noisy], instance=instance)
    assert result.success
    print("RUN", result.run_id, type(instance.compute_log_manager).__name__)
'''


def test_step_output_reaches_its_log_files_and_the_terminal(tmp_path, monkeypatch):
    """The compute log manager (a thread mirrors, where Dagster starts tail processes):
    everything a step writes, from Python, C or a child process, is in the step's log files
    the UI reads and still on the terminal of the process that ran it."""
    import os
    import subprocess
    import sys

    home = _home(tmp_path, monkeypatch, REPO / "dagster.yaml")
    done = subprocess.run([sys.executable, "-c", MIRROR_SCRIPT], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DAGSTER_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-2000:]
    terminal = done.stdout
    _, run_id, manager = next(line for line in terminal.splitlines() if line.startswith("RUN ")).split()
    assert manager == "ThreadMirroredComputeLogManager"
    for line in ("from python", "from a child process", "from the descriptor", "x" * 300_000):
        assert line + "\n" in terminal
    assert "to stderr" in done.stderr
    with dg.DagsterInstance.get() as instance:
        [step] = [e for e in instance.all_logs(run_id)
                  if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.LOGS_CAPTURED]
        manager = instance.compute_log_manager
        log_key = manager.build_log_key_for_run(run_id, step.dagster_event.logs_captured_data.file_key)
        data = manager.get_log_data(log_key)
        assert manager.is_capture_complete(log_key)
    stdout = data.stdout.decode()
    assert stdout.index("from python") < stdout.index("from the descriptor") < stdout.index("x" * 300_000)
    assert "from a child process\n" in stdout
    assert "to stderr" in data.stderr.decode()
