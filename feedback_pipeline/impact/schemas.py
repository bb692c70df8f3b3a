"""Pandera (polars) schemas of `release_changes` and `impact_metrics`."""

import pandera.polars as pa
import polars as pl


class ReleaseChanges(pa.DataFrameModel):
    """Every prompt / retrieval / model change per agent, detected in traffic or declared."""

    change_id: str = pa.Field(unique=True)
    agent_id: str = pa.Field()
    dimension: str = pa.Field(isin=["prompt_version", "retrieval_version", "model"])
    before_version: str = pa.Field(nullable=True)
    after_version: str = pa.Field()
    change_week: pl.Date = pa.Field(nullable=True)
    concurrent: bool = pa.Field(nullable=True, description="both versions live in one week (A/B, canary)")
    rollout_weeks: pl.Int64 = pa.Field(nullable=True, ge=1)
    detected: bool = pa.Field()
    declared: bool = pa.Field()
    description: str = pa.Field(nullable=True)

    class Config:
        strict = False  # a few descriptive columns (first/last seen, shares) are free-form


class ImpactMetrics(pa.DataFrameModel):
    """Before/after (or arm A/B) effects per change and metric, with CIs, p, BH-adjusted p and MDE."""

    agent_id: str = pa.Field()
    change_id: str = pa.Field()
    dimension: str = pa.Field()
    before_version: str = pa.Field(nullable=True)
    after_version: str = pa.Field()
    metric: str = pa.Field()
    method: str = pa.Field(isin=["hajek", "ppi", "mean"])
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

    class Config:
        strict = False  # means, SE, design and notes columns ride along

    @pa.dataframe_check(error="ci_low <= effect <= ci_high")
    def ordered(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ok = (pl.col("ci_low") <= pl.col("effect") + 1e-12) & (pl.col("effect") <= pl.col("ci_high") + 1e-12)
        return data.lazyframe.select(ok.fill_null(True))

    @pa.dataframe_check(error="BH-adjusted p is never below the raw p")
    def adjusted_at_least_raw(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("p_adjusted") >= pl.col("p_value") - 1e-12).fill_null(True))


class LoopHealth(pa.DataFrameModel):
    """Week over week per agent: is the improvement loop working?"""

    agent_id: str = pa.Field()
    week: pl.Date = pa.Field()
    n_traces: pl.Int64 = pa.Field(ge=0)
    share_rated: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    pass_rate: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    eval_set_size: pl.Int64 = pa.Field(nullable=True, ge=0)
    pass_rate_stalled: bool = pa.Field(nullable=True)
    eval_set_stalled: bool = pa.Field(nullable=True)
    input_drift: bool = pa.Field(nullable=True)

    class Config:
        strict = False  # CIs, PSI values, κ, label counts and the flags text ride along
