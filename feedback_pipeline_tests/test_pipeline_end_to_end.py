"""The whole chain on a small demo world, through real Dagster runs and a real
(loopback) OpenAI-compatible judge: ingest -> scores -> queue -> labels -> estimates."""

import json
from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.automation import label_inbox_sensor
from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.judge import JudgeResource

WEEKS = [DEMO_FIRST_WEEK.isoformat(), (DEMO_FIRST_WEEK + timedelta(days=7)).isoformat()]
BEFORE_LABELS = dg.AssetSelection.groups("ingest", "scoring", "sampling")
LABELS = dg.AssetSelection.groups("labels") - dg.AssetSelection.assets("quality_estimates")


def _run(resources, selection, partition=None):
    result = dg.materialize(ASSETS + ASSET_CHECKS, selection=selection, partition_key=partition,
                            resources=resources, raise_on_error=False)
    assert result.success
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = FeedbackHome(path=str(tmp_path_factory.mktemp("e2e") / "home"))
    generate_world(home.root, seed=3, weeks=2, turns_per_week=3000)
    truth = pl.read_parquet(home.root / "demo_truth" / "turn_truth.parquet")
    with FakeOpenAIServer(truth=truth) as server:
        judge = JudgeResource(base_url=server.url, model="fake-judge-1", max_judge_calls_per_week=600)
        resources = {"home": home, "judge": judge}
        for week in WEEKS:
            _run(resources, BEFORE_LABELS, week)
        calls_first_pass = server.call_count
        _run(resources, BEFORE_LABELS, WEEKS[0])  # a re-run: cached, no new calls
        calls_after_rerun = server.call_count
    with home.warehouse() as con:
        queues = con.execute("SELECT * FROM annotation_queue").pl()
    for week in WEEKS:
        write_demo_labels(queues.filter(pl.col("week") == date.fromisoformat(week)), truth,
                          home.labels_inbox, week, seed=1)
    first_import = _run(resources, LABELS)
    second_import = _run(resources, LABELS)
    for week in WEEKS:
        _run(resources, dg.AssetSelection.assets("quality_estimates"), week)
    return dict(home=home, truth=truth, calls=(calls_first_pass, calls_after_rerun),
                imports=(first_import, second_import))


def _meta(result, key):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_rerun_of_a_week_makes_no_new_judge_calls(world):
    first, after = world["calls"]
    assert first > 0 and after == first


def test_labels_imported_once_with_accounting(world):
    first, second = (_meta(r, "human_labels") for r in world["imports"])
    assert first["files_imported"] == 6  # CSV, JSONL, Label Studio per week
    assert first["read"] == first["accepted"] + first["duplicates"] + first["quarantined"]
    assert first["quarantined"] >= 1  # the simulated annotators make mistakes on purpose
    assert second["files_imported"] == 0 and second["dagster/row_count"] == first["dagster/row_count"]


def test_quality_estimates_beat_the_naive_rates(world):
    with duckdb.connect(str(world["home"].warehouse_path), read_only=True) as con:
        est = con.execute(
            "SELECT week, agent_id, method, estimate, ci_low, ci_high FROM quality_estimates "
            "WHERE metric = 'failure_rate'").pl()
    truth = world["truth"].group_by("agent_id", "week").agg(
        (pl.col("true_verdict") == "fail").mean().alias("truth"))
    wide = est.pivot(on="method", index=["week", "agent_id"], values="estimate").join(
        truth, on=["agent_id", "week"])
    assert wide.height == 6
    for row in wide.iter_rows(named=True):
        assert abs(row["hajek"] - row["truth"]) < abs(row["naive_thumbs"] - row["truth"])
        assert abs(row["hajek"] - row["truth"]) < abs(row["naive_sample"] - row["truth"])
    assert (est["ci_low"] <= est["estimate"]).all() and (est["estimate"] <= est["ci_high"]).all()


def test_queue_exports_and_inclusion_check(world):
    folder = world["home"].exports / "annotation_queue" / WEEKS[0]
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert tasks and {"trace_id", "inclusion_prob", "agent_response"} <= set(tasks[0]["data"])
    assert (folder / "queue.csv").read_text().startswith("week,agent_id,trace_id")
    assert "<Choices" in (folder / "label_studio_config.xml").read_text()


def test_inbox_sensor_fires_once_per_new_file(tmp_path):
    home = FeedbackHome(path=str(tmp_path / "home"))
    sensor = label_inbox_sensor
    (home.labels_inbox / "a.csv").write_text("trace_id,annotator_id,verdict,failure_category,rubric_version,labeled_at\n")
    with dg.build_sensor_context(resources={"home": home}) as ctx:
        first = sensor(ctx)
        assert isinstance(first, dg.RunRequest)
        cursor = ctx.cursor
    with dg.build_sensor_context(cursor=cursor, resources={"home": home}) as ctx:
        assert isinstance(sensor(ctx), dg.SkipReason)
    (home.labels_inbox / "b.jsonl").write_text("{}\n")
    with dg.build_sensor_context(cursor=cursor, resources={"home": home}) as ctx:
        assert isinstance(sensor(ctx), dg.RunRequest)
