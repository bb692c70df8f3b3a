"""One week's `automated_scores` rows, and the figures its materialization reports.

Pure functions: raw_traces rows in, score rows out (carried trace columns, deterministic
scores, the judge's columns, in the `AutomatedScores` model's order). Reading and writing
the warehouse is the asset's (`assets.py`); the scorers are `deterministic.py`'s and the
judge is `judge/`'s.
"""

from typing import Any

import dagster as dg
import polars as pl

from feedback_pipeline.checks import markdown_table
from feedback_pipeline.frames import empty_frame, polars_schema
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.rubrics import Rubric
from feedback_pipeline.scoring.columns import CARRIED_FROM_TRACES
from feedback_pipeline.scoring.deterministic import deterministic_scores, with_conversation_context
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource, judge_traces
from feedback_pipeline.scoring.judge.prompts import CONTEXT_COLUMN
from feedback_pipeline.scoring.judge.resource import ENV_BASE_URL, ENV_MODEL
from feedback_pipeline.scoring.judge.traces import INPUT_COLUMNS
from feedback_pipeline.scoring.schemas import AutomatedScores


def score_deterministic(traces: pl.DataFrame | pl.LazyFrame, keep: tuple[str, ...] = ()) -> pl.DataFrame:
    """Carried trace columns (+ `keep`) and the deterministic scores, one row per trace."""
    return traces.lazy().select(*CARRIED_FROM_TRACES, *keep, *deterministic_scores()).collect()


def score_week(traces: pl.DataFrame, rubric: Rubric, judge: JudgeResource,
               cache: JudgeCache | None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The week's automated_scores rows (an empty raw_traces week gives none) and the judge's run stats."""
    if traces.is_empty():
        traces = empty_frame(RawTraces)
    # The previous turn is context for the judge only; skip building it without one.
    scores = score_deterministic(
        with_conversation_context(traces) if judge.is_configured
        else traces.with_columns(pl.lit("").alias(CONTEXT_COLUMN)),
        keep=("user_message", "agent_response", CONTEXT_COLUMN),
    )
    judged, stats = judge_traces(scores.select(*INPUT_COLUMNS, CONTEXT_COLUMN), rubric, judge, cache)
    out = scores.join(judged, on="trace_id", how="left").select(list(polars_schema(AutomatedScores)))
    return out, stats


def scores_metadata(out: pl.DataFrame, stats: dict[str, Any], rubric: Rubric,
                    judge_configured: bool) -> dict[str, Any]:
    """Materialization metadata: response shape, per-agent figures, the judge's run stats and warnings."""
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
    if not judge_configured:
        judge_meta["judge_status"] = f"judge not configured: set {ENV_BASE_URL} and {ENV_MODEL}"
    return {
        **{k: (float(v) if v is not None else 0.0) for k, v in shape.row(0, named=True).items()},
        "by_agent": dg.MetadataValue.md(markdown_table(by_agent)),
        "judge_rubric": f"{rubric.id}/{rubric.version} ({rubric.content_hash[:12]})",
        **judge_meta,
    }
