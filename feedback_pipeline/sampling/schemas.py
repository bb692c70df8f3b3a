"""Pandera (polars) schema of `annotation_queue`."""

import pandera.polars as pa
import polars as pl


class AnnotationQueue(pa.DataFrameModel):
    """One row per trace to label: where it was drawn from and with what probability."""

    week: pl.Date = pa.Field()
    agent_id: str = pa.Field()
    trace_id: str = pa.Field(unique=True)
    stratum: str = pa.Field(description="escalated:<reason>, thumbs_down, low_score, user_rewrote, thumbs_up, unrated")
    inclusion_prob: pl.Float64 = pa.Field(gt=0, le=1, description="exact π of the design actually used; weight = 1/π")
    stratum_population: pl.Int64 = pa.Field(gt=0)
    stratum_sample_size: pl.Int64 = pa.Field(gt=0)
    stratum_draws: pl.Int64 = pa.Field(gt=0, description="draws before the per-user cap")
    user_cap_prob: pl.Float64 = pa.Field(gt=0, le=1)
    queue_position: pl.Int64 = pa.Field(ge=0, description="order to label in (all strata early)")
    user_id: str = pa.Field(nullable=True)
    conversation_id: str = pa.Field()
    thumbs: str = pa.Field(nullable=True)
    escalated: bool = pa.Field()
    escalation_reason: str = pa.Field(nullable=True)
    judge_verdict: str = pa.Field(nullable=True)
    user_message: str = pa.Field(description="redacted when redaction is on")
    context: str = pa.Field(description="previous turn of the conversation, redacted")
    agent_response: str = pa.Field(description="redacted when redaction is on")

    class Config:
        strict = True
