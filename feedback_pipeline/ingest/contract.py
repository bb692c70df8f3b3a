"""The landing-file contract: field names, enums and the typed shape of `raw_traces`.

Only constants live here, so that the demo generator, the ingest parser and the
schemas all name the same fields without importing each other.
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

# Columns of `raw_traces`, in order. `week` is the Monday (UTC) that starts the
# trace's partition; `extra` holds unknown top-level fields as one JSON object.
RAW_TRACE_COLUMNS: dict[str, pl.DataType] = {
    "week": pl.Date,
    "trace_id": pl.String,
    "conversation_id": pl.String,
    "turn_index": pl.Int64,
    "timestamp": pl.Datetime("us", "UTC"),
    "agent_id": pl.String,
    "vertical": pl.String,
    "channel": pl.String,
    "intent": pl.String,
    "user_id": pl.String,
    "user_message": pl.String,
    "agent_response": pl.String,
    "tool_calls": TOOL_CALL_DTYPE,
    "latency_ms": pl.Int64,
    "prompt_version": pl.String,
    "retrieval_version": pl.String,
    "model": pl.String,
    "thumbs": pl.String,
    "escalated": pl.Boolean,
    "escalation_reason": pl.String,
    "user_rewrote": pl.Boolean,
    "extra": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}

KNOWN_TOP_LEVEL_FIELDS: tuple[str, ...] = (
    "trace_id", "conversation_id", "turn_index", "timestamp", "agent_id",
    "vertical", "channel", "intent", "user_id", "user_message", "agent_response",
    "tool_calls", "latency_ms", "prompt_version", "retrieval_version", "model",
    "feedback",
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
