"""Last week's labels as priors for next week's allocation (per agent and stratum).

`stratum_failure_rates` is the pure part; `prior_rates` is the one warehouse read
the `annotation_queue` asset does for it.
"""

from datetime import date, timedelta

import polars as pl

from feedback_pipeline.warehouse import table_exists


def stratum_failure_rates(labeled: pl.DataFrame) -> pl.DataFrame:
    """Last week's weighted failure rate (and label count) per agent and stratum, for `neyman`
    and `optimal` allocation and the planning figure.

    `labeled`: queue rows with `verdict` (null = not labeled yet, skipped).
    """
    done = labeled.filter(pl.col("verdict").is_not_null())
    weight = 1 / pl.col("inclusion_prob")
    return done.group_by("agent_id", "stratum").agg(
        failure_rate=((pl.col("verdict") == "fail").cast(pl.Float64) * weight).sum() / weight.sum(),
        labels=pl.len().cast(pl.Int64),
    ).sort("agent_id", "stratum")


def prior_rates(con, week: date) -> pl.DataFrame | None:
    """The week before `week`: its per-stratum failure rates from its labeled queue."""
    if not (table_exists(con, "annotation_queue") and table_exists(con, "human_labels")):
        return None
    labeled = con.execute("""
        SELECT q.agent_id, q.stratum, q.inclusion_prob, l.verdict
        FROM annotation_queue q JOIN human_labels l USING (trace_id)
        WHERE q.week = ? AND l.is_current AND l.source = 'annotation'
    """, [week - timedelta(days=7)]).pl()
    return stratum_failure_rates(labeled) if labeled.height else None
