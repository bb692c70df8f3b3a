"""The loop closes by itself: sensors + automation conditions stepped through simulated time.

Traces land Monday, labels Wednesday, a correction Thursday, a late trace file Friday;
each step asserts exactly which partitions automation requested, and that the
estimates move as the labels say. The same `AutomationTicker` drives `make demo`.
"""

from collections import Counter
from datetime import timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.definitions import build_defs
from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.demo.run import deliver_week_files
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.runs import AutomationTicker
from feedback_pipeline.weeks import week_end, week_start
from feedback_pipeline_tests.conftest import good_record, run_resources, write_jsonl

WEEK = DEMO_FIRST_WEEK.isoformat()
MONDAY = week_end(WEEK) + timedelta(hours=1)


def _since(ticker: AutomationTicker, n: int) -> set[tuple[str | None, str]]:
    """(partition, asset) pairs launched since the n-th run."""
    return {(week, asset) for _, week, assets in ticker.launched[n:] for asset in assets}


def _runs_per_table(ticker: AutomationTicker, n: int) -> Counter:
    """How many runs computed each (partition, asset) since the n-th run."""
    return Counter((week, asset) for _, week, assets in ticker.launched[n:] for asset in assets)


def _failure_rate(home: FeedbackHome) -> dict:
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        return dict(con.execute(
            "SELECT agent_id, struct_pack(estimate, n_labeled) FROM quality_estimates "
            "WHERE week = ? AND metric = 'failure_rate' AND method = 'hajek'", [WEEK]).fetchall())


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    home = FeedbackHome(path=str(root / "home"))
    world = root / "world"
    generate_world(world, seed=5, weeks=1, turns_per_week=1500)
    truth = pl.read_parquet(world / "demo_truth" / "turn_truth.parquet")
    ticker = AutomationTicker(defs=build_defs(run_resources(home)), instance=dg.DagsterInstance.ephemeral())
    steps = {}
    assert ticker.run_until_quiet(week_start(WEEK)) == 0  # the daemon runs before any file exists

    n = len(ticker.launched)  # Monday: the week's files land
    deliver_week_files(world, home.landing, WEEK)
    ticker.run_until_quiet(MONDAY)
    steps["monday"] = (_since(ticker, n), _failure_rate(home))
    steps[f"monday runs"] = _runs_per_table(ticker, n)

    n = len(ticker.launched)  # Wednesday: the annotators' files
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        queue = con.execute("SELECT * FROM annotation_queue").pl()
    write_demo_labels(queue, truth, home.labels_inbox, WEEK, seed=1)
    ticker.run_until_quiet(MONDAY + timedelta(days=2))
    steps["wednesday"] = (_since(ticker, n), _failure_rate(home))
    steps[f"wednesday runs"] = _runs_per_table(ticker, n)

    n = len(ticker.launched)  # Thursday: alice turns three of her passes into fails
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        passes = con.execute(
            "SELECT l.trace_id, q.agent_id FROM human_labels l JOIN annotation_queue q USING (trace_id) "
            "WHERE is_current AND annotator_id = 'alice@demo.example' AND verdict = 'pass' AND q.agent_id = 'refunds' "
            # only alice labeled it: a fail beside another annotator's pass is a disagreement
            # (adjudication, out of the estimate), not a correction
            "AND trace_id IN (SELECT trace_id FROM human_labels WHERE is_current GROUP BY trace_id HAVING count(*) = 1) "
            "ORDER BY trace_id LIMIT 3").pl()
    assert passes.height == 3
    rows = "".join(f"{t},alice@demo.example,fail,wrong_information,v1,{MONDAY + timedelta(days=3):%Y-%m-%dT%H:%M:%SZ},recheck\n"
                   for t in passes["trace_id"])
    (home.labels_inbox / "alice_corrections.csv").write_text(
        "trace_id,annotator_id,verdict,failure_category,rubric_version,labeled_at,notes\n" + rows)
    ticker.run_until_quiet(MONDAY + timedelta(days=3))
    steps["thursday"] = (_since(ticker, n), _failure_rate(home))
    steps[f"thursday runs"] = _runs_per_table(ticker, n)

    n = len(ticker.launched)  # Friday: a late file with five more traces of the week
    late = [good_record(f"late-{i}", timestamp=f"{WEEK}T1{i}:00:00Z", agent_id="refunds") for i in range(5)]
    write_jsonl(home.landing / "late" / "friday.jsonl", late)
    ticker.run_until_quiet(MONDAY + timedelta(days=4))
    steps["friday"] = (_since(ticker, n), _failure_rate(home))
    steps[f"friday runs"] = _runs_per_table(ticker, n)
    return home, steps


WEEKLY_CHAIN = {"raw_traces", "automated_scores", "annotation_queue", "quality_estimates", "weekly_report"}


def test_monday_the_weeks_files_run_its_chain_and_only_its_week(loop):
    launched, estimates = loop[1]["monday"]
    assert {w for w, _ in launched if w is not None} == {WEEK}
    assert WEEKLY_CHAIN | {"eval_set_snapshots"} <= {a for w, a in launched if w == WEEK}
    assert {"landing_scan", "human_labels", "impact_metrics", "loop_health"} <= {a for w, a in launched if w is None}
    assert set(estimates) == {"dental_front_desk", "refunds", "travel"}
    assert all(e["n_labeled"] == 0 for e in estimates.values())  # no label yet: no human estimate


def test_wednesday_labels_refresh_that_weeks_estimates_not_its_snapshot(loop):
    launched, estimates = loop[1]["wednesday"]
    weekly = {a for w, a in launched if w is not None}
    assert {w for w, _ in launched if w is not None} == {WEEK}
    assert {"quality_estimates", "weekly_report"} <= weekly
    assert not weekly & {"raw_traces", "automated_scores", "annotation_queue", "eval_set_snapshots"}
    assert {"human_labels", "judge_calibration", "impact_metrics"} <= {a for w, a in launched if w is None}
    assert all(e["n_labeled"] > 50 and e["estimate"] is not None for e in estimates.values())


def test_each_table_is_computed_once_per_wave_of_changes(loop):
    """A table that spans weeks, and a week's report, wait until their inputs have settled:
    new traces (Monday) or a label file (Wednesday) compute each of them once, not once per
    input that changed."""
    monday, wednesday = loop[1]["monday runs"], loop[1]["wednesday runs"]
    once = [(None, t) for t in ("human_labels", "release_changes", "impact_metrics", "judge_calibration",
                                "loop_health")] + [(WEEK, t) for t in ("automated_scores", "annotation_queue",
                                                                      "eval_set_snapshots", "weekly_report")]
    assert {key: monday[key] for key in once} == dict.fromkeys(once, 1)
    # Wednesday: the label file is imported once, then the week's estimates, the tables
    # that read labels and the report follow it, each once; traces are not touched.
    assert {key: wednesday[key] for key in [(None, "human_labels"), (WEEK, "quality_estimates"),
                                            (None, "judge_calibration"), (None, "impact_metrics"),
                                            (None, "loop_health"), (WEEK, "weekly_report")]} == dict.fromkeys(
        [(None, "human_labels"), (WEEK, "quality_estimates"), (None, "judge_calibration"),
         (None, "impact_metrics"), (None, "loop_health"), (WEEK, "weekly_report")], 1)
    assert not {t for _, t in wednesday} & {"raw_traces", "automated_scores", "annotation_queue", "eval_set_snapshots"}


def test_thursday_a_correction_moves_the_estimate_the_way_it_says(loop):
    _, before = loop[1]["wednesday"]
    launched, after = loop[1]["thursday"]
    assert (WEEK, "quality_estimates") in launched
    assert after["refunds"]["n_labeled"] == before["refunds"]["n_labeled"]  # superseded, not added
    assert after["refunds"]["estimate"] > before["refunds"]["estimate"]  # three passes became fails
    assert after["travel"] == before["travel"]


def test_friday_a_late_file_reingests_only_its_week(loop):
    home, steps = loop
    launched, _ = steps["friday"]
    assert {w for w, _ in launched if w is not None} == {WEEK}
    assert {"raw_traces", "automated_scores", "annotation_queue", "quality_estimates"} <= {a for _, a in launched}
    assert (WEEK, "eval_set_snapshots") not in launched  # a published snapshot never changes
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_traces WHERE trace_id LIKE 'late-%'").fetchone()[0] == 5


def test_a_quiet_tick_launches_nothing(loop, tmp_path):
    home, _ = loop
    ticker = AutomationTicker(defs=build_defs(run_resources(home)), instance=dg.DagsterInstance.ephemeral())
    ticker.run_until_quiet(MONDAY + timedelta(days=5))  # a new daemon: scans once, finds nothing new
    assert ticker.run_until_quiet(MONDAY + timedelta(days=5)) == 0
