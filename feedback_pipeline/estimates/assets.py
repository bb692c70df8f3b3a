"""The estimates stage's asset: quality_estimates, the design-weighted failure rates per agent-week."""

from datetime import date

import dagster as dg
import polars as pl

from feedback_pipeline import pools
from feedback_pipeline.checks import markdown_table, column_schema, pandera_check
from feedback_pipeline.estimates.estimators import estimate_by_rubric_version
from feedback_pipeline.estimates.schemas import QualityEstimates
from feedback_pipeline.labels.gold import gold_labels
from feedback_pipeline.frames import empty_frame
from feedback_pipeline.partitions import weekly
from feedback_pipeline.publish import publish_table, write_analyst_db
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.sampling.schemas import AnnotationQueue
from feedback_pipeline.warehouse import read_week, replace_week_frame

_COMMON = dict(group_name="estimates", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "estimates"})


@dg.asset(
    partitions_def=weekly,
    deps=["automated_scores", "annotation_queue", "human_labels"],
    pool=pools.WEEKLY,
    metadata={"dagster/column_schema": column_schema(QualityEstimates)},
    **_COMMON,
)
def quality_estimates(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Failure rates per agent-week from human labels, design-weighted with 95 % CIs, PPI with the judge, beside the naive thumbs rate."""
    week = date.fromisoformat(context.partition_key)
    with home.warehouse() as con:
        population = read_week(con, "automated_scores", week)
        # A label import can be seen before the week's queue exists (sensor and automation race):
        # then nothing is labeled yet, and the queue's own refresh re-runs this week.
        queue = read_week(con, "annotation_queue", week)
        queue = queue if queue.width else empty_frame(AnnotationQueue)
        estimates = estimate_by_rubric_version(population, queue, gold_labels(con))
        rows = replace_week_frame(con, "quality_estimates", week, estimates)
    # Analysts read a published copy (Parquet + views) while runs write the warehouse.
    publish_table(estimates, home.exports, "quality_estimates", partition=week.isoformat())
    write_analyst_db(home.exports)
    headline = estimates.filter(pl.col("metric") == "failure_rate").select(
        "agent_id", "method", pl.col("estimate").round(3), pl.col("ci_low").round(3),
        pl.col("ci_high").round(3), "n_labeled", "rubric_versions").sort("agent_id", "method")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows,
        "failure_rate": dg.MetadataValue.md(markdown_table(headline)),
    })


quality_estimates_schema_check = pandera_check("quality_estimates", QualityEstimates)
