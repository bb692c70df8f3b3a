"""Crash and concurrency safety with real processes, a real Dagster instance (the repo's
dagster.yaml in a temporary DAGSTER_HOME) and a real warehouse file.

- A run SIGKILLed around the ingest write (mid-transaction after one of its two
  tables, as the transaction begins, just before COMMIT, just after COMMIT) leaves the
  killed week either as it was or fully replaced, never half (old before COMMIT, new
  after it); no other week changes; once
  the dead run is marked failed and its pool slot freed, a re-run ends with the row
  counts of an uninterrupted run.
- Two runs of different weeks started at once against one home both succeed (the
  "warehouse" pool serialises their writing steps; DuckDB's lock plus the resource's
  retries cover everything else, shown with an outside process holding the lock), and
  end with the counts of the same weeks run one after the other.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from feedback_pipeline.runs import materialize_weeks
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.judge import JudgeResource

REPO = Path(__file__).resolve().parent.parent
WEEKS = [DEMO_FIRST_WEEK.isoformat(), (DEMO_FIRST_WEEK + timedelta(days=7)).isoformat()]
KEPT, KILLED = WEEKS
GROUPS = ("ingest", "scoring")  # what a run materializes; a killed run re-runs only ingest
# table -> the columns that identify a row (compared across runs; whole rows within one run)
TABLES = {"raw_traces": "trace_id", "ingest_quarantine": "source_file, source_line",
          "automated_scores": "trace_id"}
INGEST_TABLES = ("raw_traces", "ingest_quarantine")  # written in one transaction


def dagster_home(path: Path) -> Path:
    """A DAGSTER_HOME holding the repo's dagster.yaml, checked to load."""
    path.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", path / "dagster.yaml")
    try:
        dg.DagsterInstance.from_config(str(path)).dispose()
    except dg.DagsterInvalidConfigError as exc:
        pytest.fail(f"the repo's dagster.yaml is not a valid instance config: {exc}")
    return path


def run_in_process(home: Path, weeks: list[str], instance: dg.DagsterInstance, groups=GROUPS) -> None:
    resources = {"home": FeedbackHome(path=str(home)), "judge": JudgeResource()}
    materialize_weeks(weeks, resources=resources, selection=dg.AssetSelection.groups(*groups),
                      instance=instance)


def state(home: Path) -> dict:
    """Per table and week: row count, a checksum of the row keys, a checksum of whole rows."""
    out = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for table, key in TABLES.items():
            rows = con.execute(f"""
                SELECT week::VARCHAR, count(*), sum(hash({key}))::VARCHAR, sum(hash(t::VARCHAR))::VARCHAR
                FROM {table} t GROUP BY week""").fetchall()
            for week, n, keys, whole in rows:
                out[(table, week)] = {"rows": n, "keys": keys, "whole": whole}
    return out


def same_rows(a: dict, b: dict) -> bool:
    """Same rows by key (two different runs; timestamps such as quarantined_at differ)."""
    return {k: (v["rows"], v["keys"]) for k, v in a.items()} == {k: (v["rows"], v["keys"]) for k, v in b.items()}


def pick(s: dict, week: str, tables=TABLES) -> dict:
    return {k: v for k, v in s.items() if k[1] == week and k[0] in tables}


def helper(home: Path, weeks: list[str], dh: Path, *extra: str, groups=GROUPS) -> subprocess.Popen:
    args = [sys.executable, "-m", "feedback_pipeline_tests.crash_helper", "--home", str(home),
            "--groups", ",".join(groups), *(a for w in weeks for a in ("--week", w)), *extra]
    env = {**os.environ, "DAGSTER_HOME": str(dh), "PYTHONWARNINGS": "ignore"}
    log = tempfile.TemporaryFile("w+")  # not a pipe: a chatty helper must never block on it
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()[-3000:]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the helper ended (rc {proc.returncode}) before signalling {path.name}: {output(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name} from the helper within {timeout} s")
        time.sleep(0.002)


@pytest.fixture(scope="module")
def before_and_reference(tmp_path_factory):
    """A home with both weeks loaded from a small world, then a larger landing set dropped
    in (the "new" state the killed run was writing); plus the result of an uninterrupted
    re-run of the killed week on a copy of that home."""
    root = tmp_path_factory.mktemp("crash")
    template = root / "template"
    generate_world(template, seed=11, weeks=2, turns_per_week=3_000)
    with dg.DagsterInstance.from_config(str(dagster_home(root / "dagster_setup"))) as instance:
        run_in_process(template, WEEKS, instance)
    before = state(template)
    generate_world(template, seed=11, weeks=2, turns_per_week=20_000)  # replaces landing/demo
    reference_home = root / "reference"
    shutil.copytree(template, reference_home)
    with dg.DagsterInstance.from_config(str(dagster_home(root / "dagster_reference"))) as instance:
        run_in_process(reference_home, [KILLED], instance, groups=["ingest"])
    reference = state(reference_home)
    assert not same_rows(pick(before, KILLED), pick(reference, KILLED)), "the new landing set must change the week"
    assert pick(reference, KEPT) == pick(before, KEPT)
    return root, template, before, reference


@pytest.mark.parametrize("kill_point", ["after_first_table", "in_insert", "in_commit", "after_commit"])
def test_sigkill_inside_the_write_leaves_the_week_whole(before_and_reference, kill_point):
    root, template, before, reference = before_and_reference
    home, dh = root / kill_point, dagster_home(root / f"dagster_{kill_point}")
    shutil.copytree(template, home)
    signal_file = root / f"{kill_point}.signal"
    proc = helper(home, [KILLED], dh, "--kill-point", kill_point, "--signal", str(signal_file), groups=["ingest"])
    wait_for(signal_file, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    after_kill = state(home)
    # No other week and no other table changed, byte for byte.
    assert pick(after_kill, KEPT) == pick(before, KEPT)
    assert pick(after_kill, KILLED, {"automated_scores"}) == pick(before, KILLED, {"automated_scores"})
    # The killed week of both ingest tables is all old or all new, never a mix.
    old = pick(after_kill, KILLED, INGEST_TABLES) == pick(before, KILLED, INGEST_TABLES)
    new = same_rows(pick(after_kill, KILLED, INGEST_TABLES), pick(reference, KILLED, INGEST_TABLES))
    assert old or new, f"week {KILLED} is half written after a kill at {kill_point}"
    if kill_point == "after_first_table":
        assert old  # killed before COMMIT: DuckDB must have rolled the transaction back
    if kill_point == "after_commit":
        assert new  # a COMMIT that returned survives the kill (replayed from the WAL)
    print(f"killed at {kill_point}: week {KILLED} {'unchanged' if old else 'fully replaced'}")

    # The dead run still holds the "warehouse" pool slot: nothing would write again until
    # it is marked failed and the slot freed (what run monitoring or the UI does).
    with dg.DagsterInstance.from_config(str(dh)) as instance:
        [dead] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        claimed = instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots
        assert [s.run_id for s in claimed] == [dead.run_id]
        instance.report_run_failed(dead, message=f"process killed with SIGKILL at {kill_point}")
        instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE

        run_in_process(home, [KILLED], instance, groups=["ingest"])
    rerun = state(home)
    assert same_rows(rerun, reference)
    assert pick(rerun, KEPT) == pick(before, KEPT)


def test_two_runs_at_once_end_like_sequential_runs(tmp_path):
    home, dh = tmp_path / "home", dagster_home(tmp_path / "dagster")
    generate_world(home, seed=12, weeks=2, turns_per_week=3_000)
    sequential_home = tmp_path / "sequential"
    shutil.copytree(home, sequential_home)
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path / "dagster_seq"))) as instance:
        run_in_process(sequential_home, WEEKS, instance)

    go, refused = tmp_path / "go", tmp_path / "refused"
    reports = [tmp_path / f"report_{w}.json" for w in WEEKS]
    procs = [helper(home, [w], dh, "--go", str(go), "--report", str(r), "--refused", str(refused))
             for w, r in zip(WEEKS, reports)]
    # Another process (a script with a write connection, `feedback-pipeline status`)
    # holds the DuckDB file lock when the runs start: they must wait for it, not fail.
    with duckdb.connect(str(home / "warehouse.duckdb")) as holder:
        holder.execute("SELECT 1")
        go.touch()
        wait_for(refused, procs[0] if procs[0].poll() is None else procs[1])
        time.sleep(1)  # a few more refused tries: the backoff is what is being tested
    for proc in procs:
        assert proc.wait(timeout=120) == 0, output(proc)
    first, second = (json.loads(r.read_text()) for r in reports)

    assert first["started"] < second["ended"] and second["started"] < first["ended"], "the runs did not overlap"
    held = sorted([(a, b, 0) for a, b in first["held"]] + [(a, b, 1) for a, b in second["held"]])
    assert all(b1 <= a2 for (_, b1, _), (a2, _, _) in zip(held, held[1:])), "two processes held the warehouse at once"
    assert first["lock_refusals"] + second["lock_refusals"] >= 1  # the outside holder was waited for
    assert same_rows(state(home), state(sequential_home))
    with dg.DagsterInstance.from_config(str(dh)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert instance.event_log_storage.get_concurrency_info("warehouse").claimed_slots == []
