"""automated_scores: deterministic shape scores and the LLM judge over a week's traces."""

from datetime import date

import dagster as dg
import polars as pl

from feedback_pipeline.checks import markdown_table, column_schema, pandera_check
from feedback_pipeline.ingest.contract import RAW_TRACE_COLUMNS
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.columns import CARRIED_FROM_TRACES, DETERMINISTIC, JUDGE
from feedback_pipeline.scoring.deterministic import score_deterministic, with_conversation_context
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource, judge_traces
from feedback_pipeline.rubrics import load_rubric
from feedback_pipeline.scoring.schemas import AutomatedScores
from feedback_pipeline.warehouse import read_week, replace_week_frame

JUDGE_CONFIGURED_CHECK = "judge_configured"
JUDGE_RUBRIC = "agent_quality"


class ScoringConfig(dg.Config):
    judge_rubric_version: str | None = None  # None: the newest version on disk


@dg.asset(
    partitions_def=weekly,
    deps=["raw_traces"],
    pool="warehouse",
    group_name="scoring",
    kinds={"duckdb", "polars", "openai"},
    owners=["team:data-platform"],
    tags={"stage": "scoring"},
    metadata={"dagster/column_schema": column_schema(AutomatedScores)},
    check_specs=[dg.AssetCheckSpec(
        JUDGE_CONFIGURED_CHECK, asset="automated_scores",
        description="WARN when no judge endpoint is configured (judge columns stay null).",
    )],
)
def automated_scores(context: dg.AssetExecutionContext, config: ScoringConfig,
                     home: FeedbackHome, judge: JudgeResource) -> dg.MaterializeResult:
    """Every trace of the week scored: response shape, refusals, tool errors, and the judge's verdict."""
    week = date.fromisoformat(context.partition_key)
    rubric = load_rubric(JUDGE_RUBRIC, config.judge_rubric_version)
    with home.warehouse() as con:
        traces = read_week(con, "raw_traces", week)
    if traces.is_empty():
        traces = pl.DataFrame(schema=RAW_TRACE_COLUMNS)
    # The previous turn is context for the judge only; skip building it without one.
    scores = score_deterministic(
        with_conversation_context(traces) if judge.is_configured
        else traces.with_columns(pl.lit("").alias("conversation_context")),
        keep=("user_message", "agent_response", "conversation_context"),
    )
    # The cache opens the warehouse only to read and to write: no connection is held
    # while the judge calls run, so other writers are not locked out for that long.
    judged, stats = judge_traces(
        scores.select("trace_id", "user_message", "agent_response", "escalated", "thumbs",
                      "conversation_context"),
        rubric, judge, JudgeCache(connect=home.warehouse),
    )
    out = scores.join(judged, on="trace_id", how="left").select(
        *CARRIED_FROM_TRACES, *DETERMINISTIC, *JUDGE
    )
    with home.warehouse() as con:
        rows = replace_week_frame(con, "automated_scores", week, out)
    shape = out.select(
        pl.col("response_chars").mean().alias("mean_response_chars"),
        pl.col("is_refusal").mean().alias("refusal_rate"),
        pl.col("has_disclaimer").mean().alias("disclaimer_rate"),
        (pl.col("judge_verdict") == "fail").sum().alias("judge_fails"),
    )
    by_agent = out.group_by("agent_id").agg(
        pl.len().alias("traces"),
        pl.col("is_refusal").mean().round(4).alias("refusal_rate"),
        (pl.col("judge_verdict") == "fail").mean().round(4).alias("judge_fail_rate"),
        pl.col("judge_error").is_not_null().sum().alias("judge_errors"),
    ).sort("agent_id")
    judge_meta = {f"judge_{k}" if not k.startswith("judge") else k: v for k, v in stats.items()
                  if v is not None and not isinstance(v, (dict, list))}
    unsampled = out.filter(pl.col("judge_selection_prob") == 0).height
    if unsampled:
        # Escalations and thumbs-down alone exceed the budget: the rest has no chance to be
        # judged, so judge-based estimates cannot be re-weighted for it. Say so loudly.
        judge_meta["judge_budget_warning"] = (
            f"{unsampled} traces had selection probability 0: escalated and thumbs-down traces "
            "alone exceed max_judge_calls_per_week / max_cost_usd; raise the budget")
        context.log.warning(judge_meta["judge_budget_warning"])
    if not judge.is_configured:
        judge_meta["judge_status"] = "judge not configured: set FEEDBACK_PIPELINE_JUDGE_BASE_URL and FEEDBACK_PIPELINE_JUDGE_MODEL"
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            **{k: (float(v) if v is not None else 0.0) for k, v in shape.row(0, named=True).items()},
            "by_agent": dg.MetadataValue.md(markdown_table(by_agent)),
            "judge_rubric": f"{rubric.id}/{rubric.version} ({rubric.content_hash[:12]})",
            **judge_meta,
        },
        check_results=[dg.AssetCheckResult(
            check_name=JUDGE_CONFIGURED_CHECK,
            passed=judge.is_configured,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"status": "configured" if judge.is_configured else "judge not configured"},
        )],
    )


automated_scores_schema_check = pandera_check("automated_scores", AutomatedScores)
