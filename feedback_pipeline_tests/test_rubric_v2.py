"""A new rubric version with a new failure category flows through every stage: the
categories come from the rubric file, never from a list pinned in code.

Rubric v2 adds `too_verbose`; annotators label four weeks under v2; labels → estimates
→ eval sets → impact run through Dagster and every check passes."""

import hashlib
import shutil
from datetime import timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline import rubrics
from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, WEEKLY_SELECTION
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline_tests.conftest import run_resources

WEEKS = [(DEMO_FIRST_WEEK + timedelta(days=7 * i)).isoformat() for i in range(4)]
NEW_CATEGORY = "too_verbose"


def _rubric_v2(folder) -> None:
    v1 = (rubrics.RUBRICS_DIR / rubrics.RUBRIC_ID / "v1.md").read_text()
    v2 = (v1.replace("version: v1", "version: v2")
          .replace("  - other\n", f"  - other\n  - {NEW_CATEGORY}\n")
          .replace("policy_violation, other, null]", f"policy_violation, other, {NEW_CATEGORY}, null]")
          .replace("# Agent quality (v1)", "# Agent quality (v2)"))
    target = folder / rubrics.RUBRIC_ID
    shutil.copytree(rubrics.RUBRICS_DIR / rubrics.RUBRIC_ID, target)
    (target / "v2.md").write_text(v2)


def _run(resources, selection, partition=None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(ASSETS + ASSET_CHECKS, selection=selection, partition_key=partition,
                            resources=resources, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = result.get_asset_check_evaluations()
    blocking = [c for c in checks if c.severity == dg.AssetCheckSeverity.ERROR]  # WARN: no judge is configured here
    assert blocking and all(c.passed for c in blocking), [(c.asset_key, c.check_name) for c in blocking if not c.passed]
    return result


@pytest.fixture(scope="module")
def v2_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("rubric_v2")
    _rubric_v2(root / "rubrics")
    patch = pytest.MonkeyPatch()
    patch.setattr(rubrics, "RUBRICS_DIR", root / "rubrics")
    home = FeedbackHome(path=str(root / "home"))
    generate_world(home.root, seed=4, weeks=len(WEEKS), turns_per_week=500)
    resources = run_resources(home)
    for week in WEEKS:
        _run(resources, dg.AssetSelection.groups("ingest", "scoring", "sampling") - dg.AssetSelection.assets("landing_scan"), week)
    truth = pl.read_parquet(home.root / "demo_truth" / "turn_truth.parquet")
    with home.warehouse() as con:
        queue = con.execute("SELECT trace_id, week, timestamp FROM annotation_queue JOIN raw_traces USING (trace_id, week)").pl()
    labels = queue.join(truth.select("trace_id", "true_verdict", "true_failure_category"), on="trace_id").with_columns(
        annotator_id=pl.lit("alice@example.com"),
        verdict=pl.col("true_verdict"),
        # Under v2 a third of the failures are "too verbose" (a category v1 did not have).
        failure_category=pl.when(pl.col("true_verdict") == "fail").then(
            pl.when(pl.col("trace_id").map_elements(lambda t: int(hashlib.sha256(t.encode()).hexdigest(), 16) % 3 == 0,
                                                    return_dtype=pl.Boolean))
            .then(pl.lit(NEW_CATEGORY)).otherwise(pl.col("true_failure_category"))),
        rubric_version=pl.lit("v2"),
        labeled_at=(pl.col("week").cast(pl.Datetime("us", "UTC")) + pl.duration(days=8)).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        notes=pl.lit(None, pl.String),
    ).select("trace_id", "annotator_id", "verdict", "failure_category", "rubric_version", "labeled_at", "notes")
    labels.write_csv(home.labels_inbox / "alice_v2.csv")
    imported = _run(resources, dg.AssetSelection.assets("human_labels", "label_quarantine", "label_agreement",
                                                          "judge_calibration"))
    for week in WEEKS:
        _run(resources, WEEKLY_SELECTION - dg.AssetSelection.groups("ingest", "scoring", "sampling")
             - dg.AssetSelection.assets("weekly_report", "label_studio_tasks"), week)
    _run(resources, dg.AssetSelection.assets("release_changes", "impact_metrics", "loop_health"))
    yield home, labels, imported
    patch.undo()


def test_v2_labels_are_accepted_with_the_new_category(v2_home):
    home, labels, imported = v2_home
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        stored = con.execute("SELECT rubric_version, failure_category, count(*) FROM human_labels "
                             "WHERE source = 'annotation' GROUP BY ALL").pl()
    assert set(stored["rubric_version"]) == {"v2"}
    assert stored.filter(pl.col("failure_category") == NEW_CATEGORY)["count_star()"].sum() > 0
    assert stored["count_star()"].sum() == labels.height  # every row accepted


def test_estimates_and_eval_sets_carry_the_new_category(v2_home):
    home, _, _ = v2_home
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        metrics = set(con.execute("SELECT DISTINCT metric FROM quality_estimates WHERE rubric_versions = 'v2'").pl()["metric"])
        cases = con.execute("SELECT failure_category, rubric_version FROM eval_set_snapshots "
                            f"WHERE week = '{WEEKS[-1]}' AND source = 'annotation'").pl()
        impact = set(con.execute("SELECT DISTINCT metric FROM impact_metrics").pl()["metric"])
    assert f"failure_rate:{NEW_CATEGORY}" in metrics and "failure_rate:other" in metrics
    assert NEW_CATEGORY in set(cases["failure_category"]) and set(cases["rubric_version"]) == {"v2"}
    assert f"failure_rate:{NEW_CATEGORY}" in impact
