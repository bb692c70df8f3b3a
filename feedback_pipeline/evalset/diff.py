"""What changed between two snapshots of an agent: cases added, removed or relabeled.

Row comparison only; the analysts' SQL for the same question is in
`feedback_pipeline.publish.EXAMPLE_QUERIES["snapshot_diff"]`.
"""

import polars as pl

from feedback_pipeline.evalset.schemas import EvalSetSnapshots
from feedback_pipeline.frames import conform

FIELDS = ("verdict", "failure_category", "rubric_version")


def diff_snapshots(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Cases added, removed or relabeled (verdict, category or rubric version) from old to new."""
    def pick(frame: pl.DataFrame) -> pl.DataFrame:
        return conform(frame, EvalSetSnapshots).select("case_id", "trace_id", *FIELDS)

    both = pick(old).join(pick(new), on="case_id", how="full", coalesce=True, suffix="_new")
    changed = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_new")) for c in FIELDS)
    change = (pl.when(pl.col("trace_id").is_null()).then(pl.lit("added"))
              .when(pl.col("trace_id_new").is_null()).then(pl.lit("removed"))
              .when(changed).then(pl.lit("relabeled")))
    return (both.with_columns(change.alias("change")).filter(pl.col("change").is_not_null())
            .select("case_id", pl.coalesce("trace_id_new", "trace_id").alias("trace_id"), "change",
                    *[e for c in FIELDS
                      for e in (pl.col(c).alias(f"old_{c}"), pl.col(f"{c}_new").alias(f"new_{c}"))])
            .sort("change", "case_id"))
