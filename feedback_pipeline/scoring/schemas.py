"""Pandera (polars) schemas of the scoring stage's tables: `automated_scores` and `judge_cache`.

Each model is its table, said once: column groups (`columns.py`), Polars dtypes and empty
frames (`feedback_pipeline.frames`), the judge cache's DDL (`judge/cache.py`) and the Dagster
column schema derive from here. How the scores are computed does not belong here.
"""

import pandera.polars as pa
import polars as pl

from feedback_pipeline.ingest.contract import ESCALATION_REASONS, THUMBS_VALUES
from feedback_pipeline.scoring.deterministic import LATENCY_LABELS


class AutomatedScores(pa.DataFrameModel):
    """One row per trace: deterministic shape scores and the LLM judge's verdict."""

    week: pl.Date = pa.Field()
    trace_id: str = pa.Field(unique=True)
    conversation_id: str = pa.Field()
    turn_index: pl.Int64 = pa.Field(ge=0)
    timestamp: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field()
    agent_id: str = pa.Field()
    user_id: str = pa.Field(nullable=True)
    channel: str = pa.Field(nullable=True)
    intent: str = pa.Field(nullable=True)
    prompt_version: str = pa.Field(nullable=True)
    retrieval_version: str = pa.Field(nullable=True)
    model: str = pa.Field(nullable=True)
    thumbs: str = pa.Field(nullable=True, isin=list(THUMBS_VALUES))
    escalated: bool = pa.Field()
    escalation_reason: str = pa.Field(nullable=True, isin=list(ESCALATION_REASONS))
    user_rewrote: bool = pa.Field()
    latency_ms: pl.Int64 = pa.Field(ge=0)
    response_chars: pl.Int64 = pa.Field(ge=0)
    response_words: pl.Int64 = pa.Field(ge=0)
    is_empty: bool = pa.Field()
    is_refusal: bool = pa.Field()
    has_disclaimer: bool = pa.Field()
    tool_call_count: pl.Int64 = pa.Field(ge=0)
    tool_error_count: pl.Int64 = pa.Field(ge=0)
    latency_bucket: str = pa.Field(isin=list(LATENCY_LABELS))
    deterministic_low_score: bool = pa.Field()
    judge_verdict: str = pa.Field(nullable=True, isin=["pass", "fail"])
    judge_failure_category: str = pa.Field(nullable=True)
    judge_rationale: str = pa.Field(nullable=True)
    judge_error: str = pa.Field(nullable=True)
    judge_selection_prob: pl.Float64 = pa.Field(
        nullable=True, ge=0, le=1,
        description="probability that the trace was sent to the judge (1.0 when all traffic is judged)")
    judge_rubric_id: str = pa.Field(nullable=True)
    judge_rubric_version: str = pa.Field(nullable=True)
    judge_rubric_hash: str = pa.Field(nullable=True)
    judge_model: str = pa.Field(nullable=True)
    judge_prompt_hash: str = pa.Field(nullable=True)
    judge_cached: bool = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check(error="a judged trace must have a verdict or an error, never both")
    def verdict_xor_error(cls, data: pa.PolarsData) -> pl.LazyFrame:
        judged = pl.col("judge_verdict").is_not_null()
        errored = pl.col("judge_error").is_not_null()
        return data.lazyframe.select(~(judged & errored))

    @pa.dataframe_check(error="a fail verdict needs a failure category; a pass has none")
    def category_matches_verdict(cls, data: pa.PolarsData) -> pl.LazyFrame:
        verdict, category = pl.col("judge_verdict"), pl.col("judge_failure_category")
        return data.lazyframe.select(
            verdict.is_null() | ((verdict == "fail") == category.is_not_null())
        )


class JudgeCacheTable(pa.DataFrameModel):
    """One successful judge verdict per cache key (prompt, rubric file, model, params), kept across weeks."""

    cache_key: str = pa.Field(unique=True, description="sha256 of prompt hash | rubric hash | model | judge params")
    verdict: str = pa.Field()
    failure_category: str = pa.Field(nullable=True)
    rationale: str = pa.Field(nullable=True)
    rubric_id: str = pa.Field()
    rubric_version: str = pa.Field()
    rubric_hash: str = pa.Field()
    model: str = pa.Field()
    prompt_hash: str = pa.Field()
    prompt_tokens: pl.Int64 = pa.Field(nullable=True)
    completion_tokens: pl.Int64 = pa.Field(nullable=True)
    created_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field(description="set by the warehouse on insert")

    class Config:
        strict = True
