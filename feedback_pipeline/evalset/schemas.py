"""Pandera (polars) models of the eval-set stage's frames: the tables it writes
(`eval_set_snapshots`, `eval_set_manifests`), the preference-pair files, and the
candidate cases it works on. Each model is its frame's only definition: Polars dtypes,
empty frames and column orders derive from it through `feedback_pipeline.frames`.
Shapes only: no logic here.
"""

import pandera.polars as pa
import polars as pl

# A case's earlier turns in its conversation (oldest first): what the agent saw before answering.
CONTEXT_DTYPE = pl.List(pl.Struct({
    "turn_index": pl.Int64, "user_message": pl.String, "agent_response": pl.String}))
MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


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


class EvalSetCandidates(pa.DataFrameModel):
    """One labeled trace a week's snapshot may take (not stored): `candidate_cases`' output."""

    case_id: str = pa.Field()
    trace_id: str = pa.Field()
    conversation_id: str = pa.Field()
    turn_index: pl.Int64 = pa.Field(ge=0)
    agent_id: str = pa.Field()
    user_id: str = pa.Field(nullable=True)
    user_message: str = pa.Field(nullable=True)
    context: CONTEXT_DTYPE = pa.Field()
    agent_response: str = pa.Field(nullable=True)
    verdict: str = pa.Field(nullable=True)
    failure_category: str = pa.Field(nullable=True)
    rubric_version: str = pa.Field()
    source: str = pa.Field(isin=["annotation", "escalation"])
    resolution: str = pa.Field(nullable=True)
    first_seen_week: pl.Date = pa.Field()
    left_out_reason: str = pa.Field(nullable=True, isin=["unresolved_label"])


class PreferencePairs(pa.DataFrameModel):
    """One DPO/TRL preference pair (conversational format) of exports/preference_pairs/."""

    prompt: MESSAGES_DTYPE = pa.Field()
    chosen: MESSAGES_DTYPE = pa.Field()
    rejected: MESSAGES_DTYPE = pa.Field()
    pair_source: str = pa.Field(isin=["user_rewrite", "escalation_resolved"])
    chosen_evidence: str = pa.Field()
    case_id: str = pa.Field()
    trace_id: str = pa.Field()
    chosen_trace_id: str = pa.Field()
    conversation_id: str = pa.Field()
    agent_id: str = pa.Field()
    snapshot_id: str = pa.Field()
    rubric_version: str = pa.Field()
    failure_category: str = pa.Field(nullable=True)
