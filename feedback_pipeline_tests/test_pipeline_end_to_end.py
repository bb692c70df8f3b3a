"""The whole chain on a small demo world, through real Dagster runs and a real
(loopback) OpenAI-compatible judge: ingest -> scores -> queue -> labels -> estimates."""

import json
from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.automation.sensors import label_inbox_sensor
from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.judge import JudgeResource
from feedback_pipeline_tests.conftest import run_resources

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
        resources = run_resources(home, judge)
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
    after_labels = dg.AssetSelection.assets("quality_estimates") | dg.AssetSelection.groups("evalset")
    for week in WEEKS:
        _run(resources, after_labels, week)
    rerun = _run(resources, after_labels, WEEKS[0])
    impact = _run(resources, dg.AssetSelection.groups("impact") - dg.AssetSelection.assets("weekly_report"))
    report = _run(resources, dg.AssetSelection.assets("weekly_report"), WEEKS[1])
    return dict(rerun=rerun, resources=resources, impact=impact, report=report, home=home, truth=truth, calls=(calls_first_pass, calls_after_rerun),
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
    # The unweighted sample's bias depends on how much the design oversamples failures (the
    # default design oversamples them little): over the agent-weeks it is still worse.
    error = wide.select((pl.col(m) - pl.col("truth")).abs().mean().alias(m) for m in ("hajek", "naive_sample"))
    assert error["hajek"][0] < error["naive_sample"][0]
    covered = wide.join(est.filter(pl.col("method") == "hajek"), on=["week", "agent_id"]).filter(
        pl.col("truth").is_between(pl.col("ci_low"), pl.col("ci_high")))
    assert covered.height >= 5  # 95 % intervals: at most one of six may miss
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
        assert len(ctx.cursor) == len(cursor) == 16  # a digest: it does not grow with the inbox


def test_eval_set_grows_and_a_rerun_reproduces_the_hash(world):
    with duckdb.connect(str(world["home"].exports / "analyst.duckdb"), read_only=True) as con:
        sizes = dict(con.execute("SELECT week::VARCHAR, count(*) FROM eval_set_snapshots "
                                 "WHERE agent_id = 'refunds' GROUP BY 1").fetchall())
        canary = con.execute("SELECT week, list(case_id ORDER BY case_id) FROM eval_set_snapshots "
                             "WHERE agent_id = 'refunds' AND canary GROUP BY 1 ORDER BY 1").fetchall()
        views = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    assert 0 < sizes[WEEKS[0]] <= sizes[WEEKS[1]]
    # The canary is filled up to its size once, then never replaced.
    assert set(canary[0][1]) <= set(canary[1][1]) and len(canary[1][1]) <= 20
    assert {"eval_set_snapshots", "eval_set_manifests", "quality_estimates"} <= views
    [check] = [e for e in world["rerun"].get_asset_check_evaluations() if e.check_name == "snapshot_unchanged"]
    assert check.passed and check.metadata["verified_existing"].value >= 3


def test_a_snapshot_that_would_change_fails_loudly(world):
    home = world["home"]
    with home.warehouse() as con:
        before = con.execute("SELECT count(*) FROM eval_set_snapshots").fetchone()[0]
        con.execute("UPDATE eval_set_manifests SET content_hash = repeat('0', 64) "
                    "WHERE snapshot_id = ?", [f"refunds@{WEEKS[1]}"])
    result = dg.materialize(ASSETS + ASSET_CHECKS, selection=dg.AssetSelection.groups("evalset"),
                            partition_key=WEEKS[1], resources=world["resources"], raise_on_error=False)
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "snapshot_unchanged"]
    assert not check.passed
    with home.warehouse() as con:
        assert con.execute("SELECT count(*) FROM eval_set_snapshots").fetchone()[0] == before
        con.execute("UPDATE eval_set_manifests SET content_hash = ? WHERE snapshot_id = ?",
                    [_hash_of(home, f"refunds@{WEEKS[1]}"), f"refunds@{WEEKS[1]}"])


def _hash_of(home, snapshot_id):
    agent, week = snapshot_id.split("@")
    return json.loads((home.exports / "eval_sets" / agent / week / "manifest.json").read_text())["content_hash"]


def test_preference_pairs_come_from_the_dev_split_only(world):
    [check] = [e for e in world["rerun"].get_asset_check_evaluations()
               if e.check_name == "preference_pairs_dev_only"]
    assert check.passed
    exported = list((world["home"].exports / "preference_pairs").rglob("*.jsonl"))
    with duckdb.connect(str(world["home"].exports / "analyst.duckdb"), read_only=True) as con:
        test_conversations = {r[0] for r in con.execute(
            "SELECT DISTINCT conversation_id FROM eval_set_snapshots WHERE split = 'test'").fetchall()}
    for path in exported:
        for line in path.read_text().splitlines():
            pair = json.loads(line)
            assert pair["conversation_id"] not in test_conversations
            assert pair["chosen"] != pair["rejected"]


def test_impact_loop_health_and_report(world):
    with duckdb.connect(str(world["home"].warehouse_path), read_only=True) as con:
        health = con.execute("SELECT agent_id, week, n_traces, eval_set_size, share_rated FROM loop_health").pl()
        changes = con.execute("SELECT count(*) FROM release_changes").fetchone()[0]
    assert health.height == 6 and (health["n_traces"] > 0).all()
    assert changes == 0  # two weeks of unchanged versions: nothing to compare, nothing invented
    [event] = world["report"].get_asset_materialization_events()
    html = open(event.materialization.metadata["report"].value).read()
    assert "data:image/png;base64," in html and "<script" not in html
