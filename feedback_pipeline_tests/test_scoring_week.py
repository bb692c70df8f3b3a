"""A week's automated_scores rows as pure functions: the model's shape, the judge's columns, the metadata."""

from datetime import date, datetime, timezone

import duckdb
import polars as pl

from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.frames import conform, polars_schema
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.rubrics import load_rubric
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource
from feedback_pipeline.scoring.schemas import AutomatedScores
from feedback_pipeline.scoring.week import score_week, scores_metadata

RUBRIC = load_rubric("agent_quality", "v1")


def week_of_traces(n: int) -> pl.DataFrame:
    return conform(pl.DataFrame({
        "week": [date(2026, 11, 16)] * n,
        "trace_id": [f"w{i}" for i in range(n)],
        "conversation_id": [f"c{i // 2}" for i in range(n)],
        "turn_index": [i % 2 for i in range(n)],
        "timestamp": [datetime(2026, 11, 17, 9, i, tzinfo=timezone.utc) for i in range(n)],
        "agent_id": ["a" if i % 3 else "b" for i in range(n)],
        "user_message": [f"where is order {i}?" for i in range(n)],
        "agent_response": ["I'm sorry, but I can't help with that." if i == 0 else f"It ships ({i})." for i in range(n)],
        "latency_ms": [200 * i for i in range(n)],
        "thumbs": ["down" if i == 1 else None for i in range(n)],
        "escalated": [i == 2 for i in range(n)],
        "user_rewrote": [False] * n,
    }), RawTraces)


def test_empty_week_gives_no_rows_in_the_models_shape():
    out, stats = score_week(pl.DataFrame(), RUBRIC, JudgeResource(), None)
    assert out.height == 0 and dict(out.schema) == polars_schema(AutomatedScores)
    assert stats["judge_configured"] is False and stats["traces"] == 0


def test_unjudged_week_validates_and_says_the_judge_is_not_configured():
    out, stats = score_week(week_of_traces(6), RUBRIC, JudgeResource(), None)
    AutomatedScores.validate(out)
    assert out["trace_id"].to_list() == [f"w{i}" for i in range(6)]  # input order without a judge
    assert out["is_refusal"].to_list() == [True] + [False] * 5 and out["judge_verdict"].null_count() == 6
    meta = scores_metadata(out, stats, RUBRIC, judge_configured=False)
    assert meta["refusal_rate"] == 1 / 6 and meta["judge_fails"] == 0.0
    assert meta["judge_status"].startswith("judge not configured: set FEEDBACK_PIPELINE_JUDGE_BASE_URL")
    assert meta["judge_rubric"].startswith("agent_quality/v1 (")


def test_judged_week_with_a_budget_reports_the_unsampled_traces():
    con = duckdb.connect()
    with FakeOpenAIServer() as server:
        judge = JudgeResource(base_url=server.url, model="m", api_key="k", max_judge_calls_per_week=1)
        out, stats = score_week(week_of_traces(6), RUBRIC, judge, JudgeCache(con))
        assert server.call_count == 2  # the escalated and the thumbs-down trace: over the budget
    AutomatedScores.validate(out)
    assert out.filter(pl.col("judge_selection_prob") == 1.0)["trace_id"].sort().to_list() == ["w1", "w2"]
    meta = scores_metadata(out, stats, RUBRIC, judge_configured=True)
    assert meta["judge_calls_made"] == 2 and "judge_status" not in meta
    assert meta["judge_budget_warning"].startswith("4 traces had selection probability 0")
