"""Gold labels: one resolved human label per trace and rubric version.

What the estimates, the judge calibration, the eval sets and the impact comparisons
count as the human truth. Per trace and rubric version, the first rule that applies:
1. `adjudicated`: a current `source = "adjudication"` label wins (the latest if several);
2. `single` / `unanimous`: every annotator gave the same verdict and category;
3. `majority`: more than half of the annotators gave the same verdict and category;
4. `unresolved`: no gold label (verdict null); the trace is on the adjudication list;
5. `escalation` (only with include_escalation=True): no annotator label at all, but an
   escalation label exists.
Agreement statistics are `agreement.py`'s; the adjudication list is `adjudication.py`'s.
"""

import polars as pl

from feedback_pipeline.frames import empty_frame
from feedback_pipeline.labels.current import current_by_annotator, latest_by_trace
from feedback_pipeline.labels.schemas import HumanLabels
from feedback_pipeline.warehouse import table_exists


def resolve_labels(labels: pl.DataFrame, *, include_escalation: bool = False) -> pl.DataFrame:
    """One gold label per (trace_id, rubric_version); the rules are in the module docstring.

    Columns: trace_id, rubric_version, verdict, failure_category, resolution,
    n_annotators, n_agreeing (annotators who gave the gold label; null when adjudicated).
    """
    ann = current_by_annotator(labels, "annotation")
    key = ["rubric_version", "trace_id"]
    votes = (ann.group_by(key + ["_full"]).agg(pl.len().alias("_votes"))
             .sort(key + ["_votes", "_full"], descending=[False, False, True, False])
             .group_by(key, maintain_order=True).agg(
                 pl.col("_votes").sum().alias("n_annotators"),
                 pl.len().alias("_n_distinct"),
                 pl.col("_full").first().alias("_top"),
                 pl.col("_votes").first().alias("_top_votes")))
    resolution = (pl.when(pl.col("n_annotators") == 1).then(pl.lit("single"))
                  .when(pl.col("_n_distinct") == 1).then(pl.lit("unanimous"))
                  .when(pl.col("_top_votes") * 2 > pl.col("n_annotators")).then(pl.lit("majority"))
                  .otherwise(pl.lit("unresolved")))
    voted = votes.with_columns(resolution.alias("resolution")).select(
        *key, pl.when(pl.col("resolution") != "unresolved").then("_top").alias("_full"),
        "resolution", pl.col("n_annotators").cast(pl.Int64),
        pl.when(pl.col("resolution") != "unresolved").then("_top_votes").cast(pl.Int64).alias("n_agreeing"),
    )
    adjudicated = latest_by_trace(labels, "adjudication").select(
        *key, "_full", pl.lit("adjudicated").alias("resolution"))
    gold = pl.concat([
        adjudicated.join(voted.select(*key, "n_annotators"), on=key, how="left")
        .with_columns(pl.lit(None, pl.Int64).alias("n_agreeing")),
        voted.join(adjudicated, on=key, how="anti"),
    ], how="diagonal_relaxed")
    if include_escalation:
        escalated = latest_by_trace(labels, "escalation").join(gold, on=key, how="anti").select(
            *key, "_full", pl.lit("escalation").alias("resolution"),
            pl.lit(0, pl.Int64).alias("n_annotators"), pl.lit(None, pl.Int64).alias("n_agreeing"))
        gold = pl.concat([gold, escalated], how="diagonal_relaxed")
    parts = pl.col("_full").str.split_exact(":", 1)
    return gold.select(
        "trace_id", "rubric_version",
        parts.struct.field("field_0").alias("verdict"),
        parts.struct.field("field_1").alias("failure_category"),
        "resolution", pl.col("n_annotators").fill_null(0), "n_agreeing",
    ).sort("rubric_version", "trace_id")


def gold_labels(con) -> pl.DataFrame:
    """One resolved human label per trace and rubric version (annotators + adjudication)."""
    if not table_exists(con, "human_labels"):
        return resolve_labels(empty_frame(HumanLabels))
    labels = con.execute("SELECT * FROM human_labels WHERE is_current").pl()
    gold = resolve_labels(labels)
    return gold.filter(pl.col("verdict").is_not_null())
