"""Which label rows count: the current ones, one per annotator (or per trace) and source.

Shared by agreement, annotator stats, gold labels and the adjudication list; how the
history decides what is current is `history.py`'s.
"""

import polars as pl


def current_by_annotator(labels: pl.DataFrame, source: str) -> pl.DataFrame:
    """Current labels of one source, one per (rubric version, trace, annotator): the latest.

    Adds `_full`: the label as one value ("pass", or "fail:<category>").
    """
    out = labels
    if "is_current" in out.columns:
        out = out.filter(pl.col("is_current"))
    if "source" in out.columns:
        out = out.filter(pl.col("source") == source)
    return (out.sort("labeled_at", nulls_last=False)
            .unique(["rubric_version", "trace_id", "annotator_id"], keep="last", maintain_order=True)
            .with_columns(pl.when(pl.col("verdict") == "fail")
                          .then(pl.format("fail:{}", pl.col("failure_category").fill_null("?")))
                          .otherwise(pl.col("verdict")).alias("_full")))


def latest_by_trace(labels: pl.DataFrame, source: str) -> pl.DataFrame:
    """The latest current label of one source per (rubric version, trace), whoever gave it."""
    return (current_by_annotator(labels, source).sort("labeled_at")
            .unique(["rubric_version", "trace_id"], keep="last", maintain_order=True))
