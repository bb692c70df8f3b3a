"""Pandera (polars) schemas of `eval_set_snapshots` and `eval_set_manifests`."""

import pandera.polars as pa
import polars as pl

from feedback_pipeline.evalset.snapshot import CONTEXT_DTYPE


class EvalSetSnapshots(pa.DataFrameModel):
    """One row per case per weekly snapshot; a snapshot never changes once written."""

    snapshot_id: str = pa.Field(description="<agent_id>@<week>")
    agent_id: str = pa.Field()
    week: pl.Date = pa.Field()
    case_id: str = pa.Field()
    trace_id: str = pa.Field()
    conversation_id: str = pa.Field()
    turn_index: pl.Int64 = pa.Field(ge=0)
    split: str = pa.Field(isin=["test", "dev"], description="stable hash of conversation_id")
    canary: bool = pa.Field(description="fixed subset, never replaced")
    first_seen_week: pl.Date = pa.Field()
    verdict: str = pa.Field(isin=["pass", "fail"])
    failure_category: str = pa.Field(nullable=True)
    rubric_version: str = pa.Field()
    source: str = pa.Field(isin=["annotation", "escalation"])
    resolution: str = pa.Field(nullable=True)
    user_message: str = pa.Field()
    context: CONTEXT_DTYPE = pa.Field(nullable=True)
    agent_response: str = pa.Field()

    class Config:
        strict = True

    @pa.dataframe_check(error="case_id must be unique within a snapshot")
    def unique_case(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.struct("snapshot_id", "case_id").is_unique())

    @pa.dataframe_check(error="a conversation may not straddle splits")
    def one_split_per_conversation(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("split").n_unique().over("snapshot_id", "conversation_id") == 1)


class EvalSetManifests(pa.DataFrameModel):
    snapshot_id: str = pa.Field(unique=True)
    agent_id: str = pa.Field()
    week: pl.Date = pa.Field()
    content_hash: str = pa.Field(str_length={"min_value": 64, "max_value": 64})
    n_cases: pl.Int64 = pa.Field(ge=0)
    created_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field()

    class Config:
        strict = True
