"""`impact_metrics` through Dagster with an agent endpoint configured: the paired replay's rows
(method `mcnemar`) land in the table and pass its blocking schema check.

Real assets and checks (`definitions`), a temporary home and DuckDB warehouse, the loopback
agent and judge of `test_replay`. Upstream tables are seeded directly: two weeks of
`automated_scores` with a prompt change p1 -> p2, and the agent's eval-set snapshot.
"""

from datetime import date, timedelta

import dagster as dg
import numpy as np
import polars as pl

from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
from feedback_pipeline.evalset.schemas import EvalSetSnapshots
from feedback_pipeline.frames import conform
from feedback_pipeline.impact.schemas import ImpactMetrics
from feedback_pipeline.scoring.schemas import AutomatedScores
from feedback_pipeline.warehouse import replace_table
from feedback_pipeline_tests.test_replay import MODELS, ContentJudge, FakeAgent, answers_well, cases

WEEK = date(2026, 1, 26)
TURNS_PER_WEEK = 400
IMPACT = dg.AssetSelection.assets("release_changes", "impact_metrics")


def scores() -> pl.DataFrame:
    """Agent `refunds`: prompt p1 in WEEK, p2 the week after (model and retrieval unchanged)."""
    rng = np.random.default_rng(5)
    parts = []
    for k, prompt in enumerate(("p1", "p2")):
        n = TURNS_PER_WEEK
        parts.append(pl.DataFrame({
            "week": [WEEK + timedelta(weeks=k)] * n, "trace_id": [f"{prompt}-t{i}" for i in range(n)],
            "conversation_id": [f"{prompt}-c{i // 2}" for i in range(n)], "turn_index": [i % 2 for i in range(n)],
            "agent_id": "refunds", "prompt_version": prompt, "retrieval_version": "r1", "model": "m1",
            "thumbs": pl.Series([("down" if u < 0.1 else None) for u in rng.random(n)], dtype=pl.String),
            "escalated": rng.random(n) < 0.1, "user_rewrote": rng.random(n) < 0.1,
            "latency_ms": rng.integers(300, 2000, n), "response_chars": rng.integers(100, 600, n),
            "is_refusal": rng.random(n) < 0.05, "has_disclaimer": rng.random(n) < 0.05,
            "tool_error_count": (rng.random(n) < 0.05).astype(np.int64),
            "judge_verdict": np.where(rng.random(n) < 0.2, "fail", "pass"), "judge_selection_prob": 1.0,
        }))
    return conform(pl.concat(parts), AutomatedScores)


def snapshots(n_test: int = 40) -> pl.DataFrame:
    """The agent's snapshots (the latest: n_test test cases, 4 dev, 7 canary), shaped as the table."""
    frame = cases(n_test).with_columns(
        trace_id=pl.col("case_id"), conversation_id=pl.col("case_id"), turn_index=pl.lit(0),
        first_seen_week=pl.col("week"), rubric_version=pl.lit("v1"), source=pl.lit("annotation"),
        agent_response=pl.lit("(the production answer)"))
    return conform(frame, EvalSetSnapshots)


def test_replay_rows_pass_the_impact_metrics_check(tmp_path, monkeypatch):
    from feedback_pipeline.impact.replay import AgentReplayResource
    from feedback_pipeline.resources import FeedbackHome
    from feedback_pipeline.scoring.judge import JudgeResource

    home = FeedbackHome(path=str(tmp_path / "home"))
    with home.warehouse() as con:
        replace_table(con, "automated_scores", scores())
        replace_table(con, "eval_set_snapshots", snapshots())
    with FakeAgent() as agent_server, ContentJudge() as judge_server:
        monkeypatch.setenv("FEEDBACK_PIPELINE_AGENT_BASE_URL", agent_server.url)  # as a deployment sets it
        resources = {
            "home": home,
            "judge": JudgeResource(base_url=judge_server.url, model="fake-judge-1", timeout_s=5, max_retries=1),
            "agent": AgentReplayResource.from_env(models=MODELS, max_retries=0, timeout_s=5),
        }
        result = dg.materialize(ASSETS + ASSET_CHECKS, selection=IMPACT, resources=resources, raise_on_error=False)
        agent_calls = agent_server.call_count

    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == {
        ("release_changes", "schema_matches"), ("impact_metrics", "schema_matches")}
    assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]

    with home.warehouse() as con:
        changes = con.execute("SELECT * FROM release_changes").pl()
        metrics = con.execute("SELECT * FROM impact_metrics").pl()
    assert changes.select("change_id", "detected").rows() == [("refunds/prompt_version/p1->p2@2026-02-02", True)]
    ImpactMetrics.validate(metrics)  # the stored table, as the check saw it
    replay = metrics.filter(pl.col("method") == "mcnemar").sort("metric")
    assert replay["metric"].to_list() == ["eval_pass_rate", "eval_pass_rate:canary"]
    assert (replay["change_id"] == changes["change_id"][0]).all() and not replay["proxy_gaming"].any()

    # 40 test cases plus 2 canary dev cases, each answered by both versions.
    replayed = cases(40).filter(pl.col("week") == pl.col("week").max())
    replayed = replayed.filter((pl.col("split") == "test") | pl.col("canary"))
    assert agent_calls == 2 * replayed.height
    overall = replay.row(0, named=True)
    assert overall["n_before"] == overall["n_after"] == replayed.height
    # planted: the new version also solves every fourth case; the judge's noise blurs it a little
    planted = np.mean([answers_well("agent-new", int(c[1:])) for c in replayed["case_id"]]) - np.mean(
        [answers_well("agent-old", int(c[1:])) for c in replayed["case_id"]])
    assert overall["effect"] > 0 and abs(overall["effect"] - planted) < 0.15
    assert overall["ci_low"] <= overall["effect"] <= overall["ci_high"]
    canary = replay.row(1, named=True)
    assert canary["n_before"] == replayed["canary"].sum() == 7
    # the unpaired rows are still there beside the replay's
    assert metrics.filter(pl.col("method") != "mcnemar").height > 0
