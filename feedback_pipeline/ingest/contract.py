"""The landing-file contract: field names, enums and how a contract timestamp is read.

Only constants and the one timestamp expression live here, so that the demo
generator, the ingest parser, the source converters and the schemas all name the
same fields without importing each other. The typed shape of `raw_traces` is the
`RawTraces` Pandera model in `schemas.py`, not restated here.
"""

import polars as pl

ESCALATION_REASONS: tuple[str, ...] = (
    "agent_could_not_answer",
    "tone_wrong",
    "tool_failed",
    "wrong_information",
    "policy_violation",
    "user_requested_human",
    "other",
)
THUMBS_VALUES: tuple[str, ...] = ("up", "down")
TOOL_STATUSES: tuple[str, ...] = ("ok", "error")

TOOL_CALL_DTYPE = pl.List(
    pl.Struct({"name": pl.String, "status": pl.String, "latency_ms": pl.Int64})
)

# Where a record came from: the contract itself, or a tracing tool's export converted
# to contract records (`feedback_pipeline/ingest/sources/`). Optional in a contract file.
SOURCE_FIELDS: tuple[str, ...] = ("source_format", "source_trace_id", "source_span_id")
CONTRACT_FORMAT = "contract"

KNOWN_TOP_LEVEL_FIELDS: tuple[str, ...] = (
    "trace_id", "conversation_id", "turn_index", "timestamp", "agent_id",
    "vertical", "channel", "intent", "user_id", "user_message", "agent_response",
    "tool_calls", "latency_ms", "prompt_version", "retrieval_version", "model",
    "feedback", *SOURCE_FIELDS,
)


def timestamp_sql(text: str) -> str:
    """SQL: the TIMESTAMPTZ a contract timestamp denotes, NULL if it is not one.

    DuckDB's cast, plus the ISO-8601 forms with hour or minute precision
    ("2026-11-17T09:30Z") that the fast path's Arrow parser accepts and DuckDB's cast
    does not: a record must get the same verdict whichever path reads its file.
    """
    with_offset = "['%Y-%m-%dT%H:%M%z', '%Y-%m-%d %H:%M%z', '%Y-%m-%dT%H%z', '%Y-%m-%d %H%z']"
    utc = "['%Y-%m-%dT%H:%MZ', '%Y-%m-%d %H:%MZ', '%Y-%m-%dT%HZ', '%Y-%m-%d %HZ', '%Y-%m-%dT%H', '%Y-%m-%d %H']"
    return (f"coalesce(TRY_CAST({text} AS TIMESTAMPTZ), TRY_STRPTIME({text}::VARCHAR, {with_offset}), "
            f"timezone('UTC', TRY_STRPTIME({text}::VARCHAR, {utc})))")

