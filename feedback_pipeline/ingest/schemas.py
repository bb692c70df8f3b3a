"""Pandera (polars) schemas of `raw_traces`, `ingest_quarantine` and `landing_scan`: the tables' one shape.

Polars dtypes, empty frames and Dagster column schemas derive from these models
(`feedback_pipeline/frames.py`, `checks.py`); no other module restates the columns.
Parsing and validation rules for landing records live in `rules.py`/`typed.py`, not here.
"""

import pandera.polars as pa
import polars as pl

from feedback_pipeline.ingest.contract import CONTRACT_FORMAT, ESCALATION_REASONS, THUMBS_VALUES, TOOL_CALL_DTYPE
from feedback_pipeline.weeks import week_expr


class RawTraces(pa.DataFrameModel):
    """One agent turn per row, typed and flattened from the landing files."""

    week: pl.Date = pa.Field(description="Monday (UTC) that starts the trace's week")
    trace_id: str = pa.Field(unique=True, str_length={"min_value": 1})
    conversation_id: str = pa.Field(str_length={"min_value": 1})
    turn_index: pl.Int64 = pa.Field(ge=0)
    timestamp: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field()
    agent_id: str = pa.Field(str_length={"min_value": 1})
    vertical: str = pa.Field(nullable=True)
    channel: str = pa.Field(nullable=True)
    intent: str = pa.Field(nullable=True)
    user_id: str = pa.Field(nullable=True, description="pseudonymous")
    user_message: str = pa.Field()
    agent_response: str = pa.Field()
    tool_calls: TOOL_CALL_DTYPE = pa.Field(nullable=True)
    latency_ms: pl.Int64 = pa.Field(ge=0)
    prompt_version: str = pa.Field(nullable=True)
    retrieval_version: str = pa.Field(nullable=True)
    model: str = pa.Field(nullable=True)
    thumbs: str = pa.Field(nullable=True, isin=list(THUMBS_VALUES))
    escalated: bool = pa.Field()
    escalation_reason: str = pa.Field(nullable=True, isin=list(ESCALATION_REASONS))
    user_rewrote: bool = pa.Field()
    extra: str = pa.Field(nullable=True, description="unknown fields of the record, as one JSON object")
    source_format: str = pa.Field(description=f"'{CONTRACT_FORMAT}', or the tracing export the turn was converted from "
                                               "(otlp, langfuse, langsmith, phoenix)")
    source_trace_id: str = pa.Field(nullable=True, description="the trace's id as the source wrote it")
    source_span_id: str = pa.Field(nullable=True, description="the id of the span/observation/run that is the turn")
    source_file: str = pa.Field(description="path under landing/")
    source_line: pl.Int64 = pa.Field(ge=1, description="line (JSONL), row (Parquet, CSV) or element (JSON array), "
                                                       "1-based; a converted turn: its root span's")

    class Config:
        strict = True

    @pa.dataframe_check(error="escalation_reason set on a trace that was not escalated")
    def reason_needs_escalation(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("escalation_reason").is_null() | pl.col("escalated"))

    @pa.dataframe_check(error="trace's timestamp is outside its week")
    def timestamp_in_week(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(week_expr(pl.col("timestamp")) == pl.col("week"))


class IngestQuarantine(pa.DataFrameModel):
    """One rejected landing record per row, with a reason a person can act on."""

    week: pl.Date = pa.Field()
    source_file: str = pa.Field()
    source_line: pl.Int64 = pa.Field(nullable=True, description="null when the whole file was unreadable")
    trace_id: str = pa.Field(nullable=True)
    field: str = pa.Field(description="first field that broke the contract ('line', 'file' for whole-record problems)")
    reason: str = pa.Field(str_length={"min_value": 1})
    raw_text: str = pa.Field(nullable=True, description="the record as received, truncated to 2,000 chars")
    quarantined_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field()

    class Config:
        strict = True


class LandingScan(pa.DataFrameModel):
    """One landing file per row: its fingerprint and the weeks its records fall in."""

    source_file: str = pa.Field(unique=True, description="path relative to landing/")
    size_bytes: pl.Int64 = pa.Field(ge=0)
    modified_ns: pl.Int64 = pa.Field()
    inode: pl.Int64 = pa.Field()
    weeks: pl.List(pl.Date) = pa.Field(nullable=True, description="Mondays of the file's record timestamps")
    scanned_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field()

    class Config:
        strict = True
