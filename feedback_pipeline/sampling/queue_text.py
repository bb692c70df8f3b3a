"""The text an annotator reads beside each queued trace: the turn, its context, the answer.

Redacted here (only for the queued rows: redaction is the costly part). Which
traces are queued is `design`; how the queue is exported is `exports`.
"""

import polars as pl

from feedback_pipeline.redact import redact_columns
from feedback_pipeline.scoring.deterministic import with_conversation_context

QUEUE_TEXT = ("user_message", "context", "agent_response")


def queue_text(traces: pl.DataFrame, queued: pl.Series, redact: bool) -> pl.DataFrame:
    """trace_id + the text an annotator needs (the turn, the previous turn, the answer),
    for the queued traces only: redaction is the costly part, so it sees 450 rows, not 1M."""
    text = with_conversation_context(traces).select(
        "trace_id", "user_message", "agent_response", pl.col("conversation_context").alias("context"),
    ).filter(pl.col("trace_id").is_in(queued.implode()))
    return redact_columns(text, list(QUEUE_TEXT)) if redact else text


def with_queue_text(con, drawn: pl.DataFrame, week, redact: bool) -> pl.DataFrame:
    """`drawn` joined with its text, read from `raw_traces` for the queued conversations only."""
    con.register("_queued", drawn.select("trace_id", "conversation_id"))
    try:
        traces = con.execute(
            "SELECT trace_id, conversation_id, turn_index, user_message, agent_response FROM raw_traces "
            "WHERE week = ? AND conversation_id IN (SELECT conversation_id FROM _queued)", [week]).pl()
    finally:
        con.unregister("_queued")
    return drawn.join(queue_text(traces, drawn["trace_id"], redact), on="trace_id", how="left")
