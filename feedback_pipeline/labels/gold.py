"""Gold labels: one resolved human label per trace and rubric version, read from the warehouse.

What the estimates, the judge calibration and the impact comparisons count as the
human truth; how disagreements resolve is `labels.agreement`'s.
"""

import polars as pl

from feedback_pipeline.labels.agreement import resolve_labels
from feedback_pipeline.warehouse import table_exists

GOLD_COLUMNS = {"trace_id": pl.String, "rubric_version": pl.String, "verdict": pl.String,
                "failure_category": pl.String}


def gold_labels(con) -> pl.DataFrame:
    """One resolved human label per trace and rubric version (annotators + adjudication)."""
    if not table_exists(con, "human_labels"):
        return pl.DataFrame(schema=GOLD_COLUMNS)
    labels = con.execute("SELECT * FROM human_labels WHERE is_current").pl()
    gold = resolve_labels(labels)
    return gold.filter(pl.col("verdict").is_not_null())
