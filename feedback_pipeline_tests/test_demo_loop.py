"""Every asset, end to end, through the automation `make demo` uses: five weeks of the demo
world (the helpful dental prompt goes live in week 4, the refunds retrieval change that hurts
in week 5), the loopback judge and the loopback agent answering as each version would.

No stage is called by hand: `run_demo` drops each week's files and the annotators' labels
and the sensors and automation conditions decide every run. The test then reads the
instance and the warehouse: every asset materialized, every check passed, the paired
replay found both planted changes with the right sign, and the report shows it.
"""

import subprocess
import sys
import time

import dagster as dg
import polars as pl
import pytest

from feedback_pipeline.definitions import defs
from feedback_pipeline.demo.run import demo_weeks, run_demo, stop_servers
from feedback_pipeline.resources import FeedbackHome

WEEKS = 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_loop")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEEDBACK_PIPELINE_HOME", str(root / "home"))
        for name in ("DAGSTER_HOME", "FEEDBACK_PIPELINE_WAREHOUSE", "FEEDBACK_PIPELINE_AGENT_BASE_URL"):
            mp.delenv(name, raising=False)
        instance = dg.DagsterInstance.ephemeral()
        run_demo(seed=7, turns_per_week=3_000, weeks=WEEKS, instance=instance)
    return FeedbackHome(path=str(root / "home")), instance


def test_every_asset_is_materialized_for_every_week(demo):
    _, instance = demo
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if graph.get(key).partitions_def is None:
            assert instance.get_latest_materialization_event(key) is not None, key
        else:
            done = instance.get_materialized_partitions(key)
            assert set(demo_weeks(WEEKS)) <= done, (key, sorted(done))


def test_every_blocking_check_of_every_run_passed(demo):
    _, instance = demo
    evaluations = [
        event.dagster_event.event_specific_data
        for record in instance.get_run_records()
        for event in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    checked = {e.asset_key.to_user_string() for e in evaluations}
    assert checked >= {"raw_traces", "automated_scores", "annotation_queue", "human_labels", "quality_estimates",
                       "eval_set_snapshots", "heldout_replay", "release_changes", "impact_metrics", "loop_health"}
    failed = {(e.asset_key.to_user_string(), e.check_name, e.severity) for e in evaluations if not e.passed}
    # Blocking checks all pass. The one WARN finding allowed is what the world plants: its judge
    # is lenient on tone, and the dental prompt cuts tone failures, so agreement moves by month.
    assert failed <= {("judge_calibration", "judge_drift", dg.AssetCheckSeverity.WARN)}, failed


def test_the_paired_replay_finds_both_planted_changes_with_the_right_sign(demo):
    home, _ = demo
    with home.warehouse(read_only=True) as con:
        replay = con.execute("SELECT change_id, effect, ci_low, ci_high, n_before FROM impact_metrics "
                             "WHERE method = 'mcnemar' AND metric = 'eval_pass_rate'").pl()
    effect = {c.split("/")[0] + "/" + c.split("/")[1]: e for c, e in replay.select("change_id", "effect").rows()}
    assert {"dental_front_desk/prompt_version", "refunds/retrieval_version"} <= set(effect), replay
    assert effect["dental_front_desk/prompt_version"] > 0  # planted: 18 % -> 11 % failures
    assert effect["refunds/retrieval_version"] < 0  # planted: 12 % -> 17 % failures
    assert (replay["n_before"] > 0).all()


def test_loop_health_is_measured_by_replay_and_the_report_shows_the_replay(demo):
    home, _ = demo
    with home.warehouse(read_only=True) as con:
        health = con.execute("SELECT agent_id, week, pass_rate, pass_rate_ci_low, pass_rate_ci_high "
                             "FROM loop_health WHERE pass_rate_source = 'replay'").pl()
    assert health.select("agent_id").n_unique() == 3
    assert health.filter(pl.col("pass_rate").is_not_null()).select(
        (pl.col("pass_rate_ci_low") <= pl.col("pass_rate")) & (pl.col("pass_rate") <= pl.col("pass_rate_ci_high"))
    ).to_series().all()
    page = (home.exports / "reports" / f"{demo_weeks(WEEKS)[-1]}.html").read_text()
    assert "eval_pass_rate [mcnemar]" in page and "refunds/retrieval_version" in page


def test_the_report_shows_the_labels_the_next_queue_needs(demo):
    """The planning figure the week's queue computed (its metadata) is the one in the report."""
    home, instance = demo
    week = demo_weeks(WEEKS)[-1]
    [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("annotation_queue"), asset_partitions=[week]), limit=1).records
    planned = record.asset_materialization.metadata["labels_needed_by_agent"].value
    assert {r["agent_id"] for r in planned} == {"dental_front_desk", "refunds", "travel"}
    section = (home.exports / "reports" / f"{week}.html").read_text().split("Labels needed next week")[1]
    for r in planned:
        assert r["labels_for_failure_rate"] > 0
        assert f">{r['labels_for_failure_rate']}<" in section and f">{r['labels_for_largest_category']}<" in section


def test_a_server_that_outlives_its_sigterm_is_killed():
    """The demo's loopback servers are stopped even when one ignores SIGTERM."""
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # its handler is installed
    polite = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    polite.stdout.readline()
    started = time.monotonic()
    stop_servers(stubborn, polite, grace_s=2.0)
    assert stubborn.returncode == -9  # killed after the grace period
    assert polite.returncode in (-15, -9)  # gone either way (SIGTERM, or SIGKILL on a loaded machine)
    assert time.monotonic() - started < 10
