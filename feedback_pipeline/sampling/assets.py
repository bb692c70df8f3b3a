"""annotation_queue: the week's stratified, bias-correctable sample for human labels."""

from datetime import date, timedelta

import dagster as dg
import polars as pl

from feedback_pipeline.checks import markdown_table, column_schema, pandera_check
from feedback_pipeline.frames import empty_frame
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.sampling.design import (
    SamplingConfig,
    check_inclusion,
    sample_week,
    stratum_failure_rates,
)
from feedback_pipeline.sampling.exports import export_queue
from feedback_pipeline.sampling.schemas import AnnotationQueue
from feedback_pipeline.scoring.deterministic import with_conversation_context
from feedback_pipeline.redact import redact_columns
from feedback_pipeline.rubrics import load_rubric
from feedback_pipeline.warehouse import read_week, replace_week_frame, table_exists

INCLUSION_CHECK = "inclusion_probabilities_valid"
QUEUE_TEXT = ("user_message", "context", "agent_response")


class QueueConfig(dg.Config):
    labels_per_agent_week: int = 150
    uniform_fraction: float = 0.2
    allocation: str = "fixed"  # fixed | proportional | neyman (from last week's labels)
    max_items_per_user: int = 5
    seed: int = 0
    redact_pii: bool = True
    rubric_version: str | None = None  # None: the newest agent_quality version


def queue_text(traces: pl.DataFrame, queued: pl.Series, redact: bool) -> pl.DataFrame:
    """trace_id + the text an annotator needs (the turn, the previous turn, the answer),
    for the queued traces only: redaction is the costly part, so it sees 450 rows, not 1M."""
    text = with_conversation_context(traces).select(
        "trace_id", "user_message", "agent_response", pl.col("conversation_context").alias("context"),
    ).filter(pl.col("trace_id").is_in(queued.implode()))
    return redact_columns(text, list(QUEUE_TEXT)) if redact else text


def _prior_rates(con, week: date) -> pl.DataFrame | None:
    """Last week's per-stratum failure rates from its labeled queue (for neyman)."""
    if not (table_exists(con, "annotation_queue") and table_exists(con, "human_labels")):
        return None
    labeled = con.execute("""
        SELECT q.agent_id, q.stratum, q.inclusion_prob, l.verdict
        FROM annotation_queue q JOIN human_labels l USING (trace_id)
        WHERE q.week = ? AND l.is_current AND l.source = 'annotation'
    """, [week - timedelta(days=7)]).pl()
    return stratum_failure_rates(labeled) if labeled.height else None


@dg.asset(
    partitions_def=weekly,
    deps=["automated_scores"],
    pool="warehouse",
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
    """Traces to label this week per agent: escalations and rare failures oversampled on purpose, each with its exact inclusion probability."""
    week = date.fromisoformat(context.partition_key)
    design = SamplingConfig(
        budget=config.labels_per_agent_week, uniform_fraction=config.uniform_fraction,
        allocation=config.allocation, user_cap=config.max_items_per_user, seed=config.seed,
    )
    with home.warehouse() as con:
        scores = read_week(con, "automated_scores", week)
        prior = _prior_rates(con, week) if config.allocation == "neyman" else None
        if scores.is_empty():
            queue = empty_frame(AnnotationQueue)
        else:
            drawn = sample_week(scores, design, prior)
            con.register("_queued", drawn.select("trace_id", "conversation_id"))
            traces = con.execute(  # only the queued traces' conversations, for their context
                "SELECT trace_id, conversation_id, turn_index, user_message, agent_response FROM raw_traces "
                "WHERE week = ? AND conversation_id IN (SELECT conversation_id FROM _queued)", [week]).pl()
            con.unregister("_queued")
            text = queue_text(traces, drawn["trace_id"], config.redact_pii)
            queue = drawn.join(text, on="trace_id", how="left").select(
                list(AnnotationQueue.to_schema().columns)
            )
        rows = replace_week_frame(con, "annotation_queue", week, queue)
    problems = check_inclusion(queue) if queue.height else []
    rubric = load_rubric("agent_quality", config.rubric_version)
    paths = export_queue(queue, home.exports / "annotation_queue" / week.isoformat(),
                         rubric.version, rubric.categories)
    by_stratum = queue.group_by("agent_id", "stratum").agg(
        pl.len().alias("queued"), pl.col("stratum_population").first().alias("population"),
        pl.col("inclusion_prob").mean().round(4).alias("mean_pi"),
    ).sort("agent_id", "stratum")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "agents": queue["agent_id"].n_unique(),
            "labels_per_agent_week": config.labels_per_agent_week,
            "allocation": config.allocation,
            "by_stratum": dg.MetadataValue.md(markdown_table(by_stratum)),
            **{f"export_{k}": dg.MetadataValue.path(v) for k, v in paths.items()},
        },
        check_results=[dg.AssetCheckResult(
            check_name=INCLUSION_CHECK, passed=not problems,
            metadata={"problems": dg.MetadataValue.json(problems[:50])},
        )],
    )


annotation_queue_schema_check = pandera_check("annotation_queue", AnnotationQueue)
