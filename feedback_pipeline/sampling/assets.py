"""annotation_queue: the week's stratified, bias-correctable sample for human labels."""

from datetime import date

import dagster as dg
import polars as pl

from feedback_pipeline import pools
from feedback_pipeline.checks import markdown_table, column_schema, pandera_check
from feedback_pipeline.frames import conform, empty_frame
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.rubrics import load_rubric
from feedback_pipeline.sampling.allocation import SamplingConfig
from feedback_pipeline.sampling.design import sample_week
from feedback_pipeline.sampling.exports import export_queue
from feedback_pipeline.sampling.inclusion_check import check_inclusion
from feedback_pipeline.sampling.planning import labels_needed_table
from feedback_pipeline.sampling.priors import prior_rates
from feedback_pipeline.sampling.queue_text import with_queue_text
from feedback_pipeline.sampling.schemas import AnnotationQueue
from feedback_pipeline.warehouse import read_week, replace_week_frame

INCLUSION_CHECK = "inclusion_probabilities_valid"


class QueueConfig(dg.Config):
    labels_per_agent_week: int = 150
    uniform_fraction: float = 0.2
    # optimal | fixed | proportional | neyman (optimal and neyman learn from last week's labels)
    allocation: str = "optimal"
    max_items_per_user: int = 5
    seed: int = 0
    redact_pii: bool = True
    rubric_version: str | None = None  # None: the newest agent_quality version


def queue_by_stratum(queue: pl.DataFrame) -> pl.DataFrame:
    """Queued rows, population and mean π per agent and stratum (the metadata table)."""
    return queue.group_by("agent_id", "stratum").agg(
        pl.len().alias("queued"), pl.col("stratum_population").first().alias("population"),
        pl.col("inclusion_prob").mean().round(4).alias("mean_pi"),
    ).sort("agent_id", "stratum")


@dg.asset(
    partitions_def=weekly,
    deps=["automated_scores"],
    pool=pools.WEEKLY,
    group_name="sampling",
    kinds={"duckdb", "polars"},
    owners=["team:data-platform"],
    tags={"stage": "sampling"},
    metadata={"dagster/column_schema": column_schema(AnnotationQueue)},
    check_specs=[dg.AssetCheckSpec(
        INCLUSION_CHECK, asset="annotation_queue", blocking=True,
        description="π in (0, 1], and Σ(1/π) over each stratum matches its population within the design's bound.",
    )],
)
def annotation_queue(context: dg.AssetExecutionContext, config: QueueConfig,
                     home: FeedbackHome) -> dg.MaterializeResult:
    """Traces to label this week per agent, put where the estimates are least certain (every trace has a chance), each with its exact inclusion probability."""
    week = date.fromisoformat(context.partition_key)
    rubric = load_rubric("agent_quality", config.rubric_version)
    design = SamplingConfig(
        budget=config.labels_per_agent_week, uniform_fraction=config.uniform_fraction,
        allocation=config.allocation, user_cap=config.max_items_per_user, seed=config.seed,
        categories=rubric.categories,
    )
    with home.warehouse() as con:
        scores = read_week(con, "automated_scores", week)
        prior = prior_rates(con, week)
        queue = empty_frame(AnnotationQueue)
        if not scores.is_empty():
            drawn = sample_week(scores, design, prior)
            queue = conform(with_queue_text(con, drawn, week, config.redact_pii), AnnotationQueue)
        rows = replace_week_frame(con, "annotation_queue", week, queue)
    problems = check_inclusion(queue) if queue.height else []
    # Labels next week's queue needs for ±3 points on the failure rate, ±1 on the largest category.
    needed = labels_needed_table(scores, design, prior)
    paths = export_queue(queue, home.exports / "annotation_queue" / week.isoformat(),
                         rubric.version, rubric.categories)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "agents": queue["agent_id"].n_unique(),
            "labels_per_agent_week": config.labels_per_agent_week,
            "allocation": config.allocation,
            "by_stratum": dg.MetadataValue.md(markdown_table(queue_by_stratum(queue))),
            "labels_needed": dg.MetadataValue.md(markdown_table(needed)),
            "labels_needed_by_agent": dg.MetadataValue.json(needed.to_dicts()),  # read by weekly_report
            **{f"export_{k}": dg.MetadataValue.path(v) for k, v in paths.items()},
        },
        check_results=[dg.AssetCheckResult(
            check_name=INCLUSION_CHECK, passed=not problems,
            metadata={"problems": dg.MetadataValue.json(problems[:50])},
        )],
    )


annotation_queue_schema_check = pandera_check("annotation_queue", AnnotationQueue)
