"""Escalations with a failure reason → `source = "escalation"` fail labels.

An escalation reason picked from the product's dropdown is a label the team already
paid for. The reasons themselves are the ingest contract's; label files are read
elsewhere (`reading.py`).
"""

import polars as pl

from feedback_pipeline.ingest.contract import ESCALATION_REASONS
from feedback_pipeline.labels.identity import with_label_id
from feedback_pipeline.labels.shapes import ESCALATION_ANNOTATOR, LABEL_COLUMNS, conform_to

ESCALATION_CATEGORY: dict[str, str] = {
    reason: ("could_not_answer" if reason == "agent_could_not_answer" else reason)
    for reason in ESCALATION_REASONS if reason != "user_requested_human"
}


def escalation_labels(traces: pl.DataFrame, rubric_version: str) -> pl.DataFrame:
    """Escalations with a failure reason as fail labels (LABEL_COLUMNS).

    `user_requested_human` says nothing about the answer, so it yields no label; a reason
    outside the contract maps to `other` (the raw reason stays in `notes`).
    labeled_at is the trace's timestamp.
    """
    reason = pl.col("escalation_reason").str.strip_chars()
    escalated = pl.col("escalated").fill_null(False) if "escalated" in traces.columns else pl.lit(True)
    rows = traces.filter(escalated & reason.is_not_null() & (reason != "")
                         & (reason != "user_requested_human"))
    labels = rows.select(
        pl.col("trace_id"),
        pl.lit(ESCALATION_ANNOTATOR).alias("annotator_id"),
        pl.lit("fail").alias("verdict"),
        reason.replace_strict(ESCALATION_CATEGORY, default="other", return_dtype=pl.String)
        .alias("failure_category"),
        pl.lit(rubric_version).alias("rubric_version"),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")).alias("labeled_at"),
        pl.format("escalation_reason={}", reason).alias("notes"),
        pl.lit("escalation").alias("source"),
    )
    unhashed = {k: v for k, v in LABEL_COLUMNS.items() if k != "label_id"}
    return with_label_id(conform_to(labels, unhashed)).select(LABEL_COLUMNS.keys())
