"""Pandera (polars) models of the impact stage's tables: `release_changes`, `impact_metrics`,
`heldout_replay`, `loop_health`.

Each model is its table, said once: the Polars dtypes, column orders and empty frames the
stage writes derive from it (`feedback_pipeline.frames`), and the blocking checks validate
it. Column order here is the table's column order. Logic that fills the tables lives in
the stage's other modules, never here.
"""

import typing

import pandera.polars as pa
import polars as pl

# The new version's share of the agent's turns, every week from change_week.
SHARE_BY_WEEK = typing.Annotated[pl.List, pl.Struct({"week": pl.Date, "share": pl.Float64})]


class ReleaseChanges(pa.DataFrameModel):
    """Every prompt / retrieval / model change per agent, detected in traffic or declared."""

    change_id: str = pa.Field(unique=True, description="<agent>/<dimension>/<before>-><after>@<change_week>")
    agent_id: str = pa.Field()
    dimension: str = pa.Field(isin=["prompt_version", "retrieval_version", "model"])
    before_version: str = pa.Field(nullable=True)
    after_version: str = pa.Field()
    change_week: pl.Date = pa.Field(nullable=True, description="first week the new version is live (declared only: "
                                                                "effective_week)")
    before_first_seen: pl.Date = pa.Field(nullable=True, description="first week with any row of the old version")
    before_last_seen: pl.Date = pa.Field(nullable=True)
    after_first_seen: pl.Date = pa.Field(nullable=True)
    after_last_seen: pl.Date = pa.Field(nullable=True)
    after_share_by_week: SHARE_BY_WEEK = pa.Field(nullable=True)
    concurrent: bool = pa.Field(nullable=True, description="both versions live in one week (A/B, canary)")
    rollout_weeks: pl.Int64 = pa.Field(nullable=True, ge=1, description="weeks from change_week to full rollout, "
                                                                        "inclusive (null: never got there)")
    detected: bool = pa.Field()
    declared: bool = pa.Field()
    effective_week: pl.Date = pa.Field(nullable=True, description="the declared Monday, if declared")
    description: str = pa.Field(nullable=True)
    notes: str = pa.Field(nullable=True)

    class Config:
        strict = True


# The columns that name the change an `impact_metrics` row belongs to.
CHANGE_CONTEXT = ("agent_id", "change_id", "dimension", "before_version", "after_version")


class ImpactMetrics(pa.DataFrameModel):
    """Before/after (or arm A/B) effects per change and metric, with CIs, p, BH-adjusted p and MDE."""

    agent_id: str = pa.Field()
    change_id: str = pa.Field()
    dimension: str = pa.Field()
    before_version: str = pa.Field(nullable=True)
    after_version: str = pa.Field()
    metric: str = pa.Field()
    # mcnemar: the paired eval replay (`eval_pass_rate`, `eval_pass_rate:canary`).
    method: str = pa.Field(isin=["hajek", "ppi", "mean", "mcnemar"])
    effect: pl.Float64 = pa.Field(nullable=True)
    relative_effect: pl.Float64 = pa.Field(nullable=True)
    ci_low: pl.Float64 = pa.Field(nullable=True)
    ci_high: pl.Float64 = pa.Field(nullable=True)
    p_value: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    p_adjusted: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    n_before: pl.Int64 = pa.Field(nullable=True, ge=0)
    n_after: pl.Int64 = pa.Field(nullable=True, ge=0)
    mde: pl.Float64 = pa.Field(nullable=True, ge=0)
    proxy_gaming: bool = pa.Field()
    mean_before: pl.Float64 = pa.Field(nullable=True)
    mean_after: pl.Float64 = pa.Field(nullable=True)
    std_error: pl.Float64 = pa.Field(nullable=True, ge=0)
    design: str = pa.Field(nullable=True, description="concurrent, sequential (or null for the replay)")
    window: str = pa.Field(nullable=True, description="the weeks and held dimensions of each side")
    proxy_gaming_reason: str = pa.Field(nullable=True)
    notes: str = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check(error="ci_low <= effect <= ci_high")
    def ordered(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ok = (pl.col("ci_low") <= pl.col("effect") + 1e-12) & (pl.col("effect") <= pl.col("ci_high") + 1e-12)
        return data.lazyframe.select(ok.fill_null(True))

    @pa.dataframe_check(error="BH-adjusted p is never below the raw p")
    def adjusted_at_least_raw(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("p_adjusted") >= pl.col("p_value") - 1e-12).fill_null(True))


PASS_RATE_SOURCES = ("replay", "logged_answers")


class HeldoutReplay(pa.DataFrameModel):
    """Per week: each held-out case (test split + canary of the week's snapshot) answered by the
    agent version live that week, and the judge's verdict on the answer."""

    week: pl.Date = pa.Field()
    agent_id: str = pa.Field()
    snapshot_id: str = pa.Field()
    case_id: str = pa.Field()
    conversation_id: str = pa.Field(nullable=True)
    split: str = pa.Field(isin=["test", "dev"])
    canary: bool = pa.Field()
    gold_verdict: str = pa.Field(nullable=True, isin=["pass", "fail"], description="the logged answer's label")
    version: str = pa.Field(nullable=True, description="prompt_version|retrieval_version|model live in the week")
    model: str = pa.Field(nullable=True, description="the model name asked for")
    answer: str = pa.Field(nullable=True)
    verdict: str = pa.Field(nullable=True, isin=["pass", "fail"])
    failure_category: str = pa.Field(nullable=True)
    error: str = pa.Field(nullable=True, description="why the case has no verdict (agent or judge)")
    agent_cached: bool = pa.Field(nullable=True)
    judge_cached: bool = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check(error="a case has a verdict or an error, never both or neither")
    def verdict_or_error(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("verdict").is_null() != pl.col("error").is_null())

    @pa.dataframe_check(error="one row per (week, agent_id, case_id)")
    def unique_case(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.struct("week", "agent_id", "case_id").is_duplicated())


class LoopHealth(pa.DataFrameModel):
    """Week over week per agent: is the improvement loop working?"""

    agent_id: str = pa.Field()
    week: pl.Date = pa.Field()
    n_traces: pl.Int64 = pa.Field(ge=0)
    share_rated: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    intent_psi: pl.Float64 = pa.Field(nullable=True, description="vs the previous calendar week")
    channel_psi: pl.Float64 = pa.Field(nullable=True)
    eval_set_size: pl.Int64 = pa.Field(nullable=True, ge=0)
    test_cases: pl.Int64 = pa.Field(nullable=True, ge=0)
    test_passed: pl.Int64 = pa.Field(nullable=True, ge=0)
    pass_rate: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    pass_rate_ci_low: pl.Float64 = pa.Field(nullable=True, description="Wilson 95 % CI, clustered by conversation")
    pass_rate_ci_high: pl.Float64 = pa.Field(nullable=True)
    pass_rate_source: str = pa.Field(nullable=True, isin=list(PASS_RATE_SOURCES),
                                     description="replay: the week's agent version re-answered the held-out "
                                                 "cases; logged_answers: the gold verdicts of the logged answers")
    replay_errors: pl.Int64 = pa.Field(nullable=True, ge=0, description="held-out cases the replay could not grade")
    pass_rate_mom_change: pl.Float64 = pa.Field(nullable=True, description="pass rate minus 4 weeks earlier's "
                                                                           "(same source)")
    pass_rate_mom_ci_low: pl.Float64 = pa.Field(nullable=True, description="95 % CI, clustered by conversation")
    pass_rate_mom_ci_high: pl.Float64 = pa.Field(nullable=True)
    pass_rate_high: pl.Float64 = pa.Field(nullable=True, description="pass rate of the last improved week")
    weeks_since_improvement: pl.Int64 = pa.Field(nullable=True)
    category_coverage: pl.Float64 = pa.Field(nullable=True)
    categories_missing: str = pa.Field(nullable=True)
    labels_imported: pl.Int64 = pa.Field(nullable=True, ge=0)
    judge_kappa: pl.Float64 = pa.Field(nullable=True)
    failure_rate: pl.Float64 = pa.Field(nullable=True)
    failure_rate_ci_low: pl.Float64 = pa.Field(nullable=True)
    failure_rate_ci_high: pl.Float64 = pa.Field(nullable=True)
    pass_rate_stalled: bool = pa.Field(nullable=True)
    eval_set_stalled: bool = pa.Field(nullable=True)
    input_drift: bool = pa.Field(nullable=True)
    flags: str = pa.Field(nullable=True)

    class Config:
        strict = True
