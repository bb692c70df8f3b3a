"""automated_scores: deterministic shape scores and the LLM judge over a week's traces.

The asset and its checks only: load the week, call `week.score_week`, write, report.
The scoring logic is in `week.py`, `deterministic.py` and `judge/`.
"""

from datetime import date

import dagster as dg

from feedback_pipeline import pools
from feedback_pipeline.checks import column_schema, pandera_check
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.rubrics import RUBRIC_ID, load_rubric
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource
from feedback_pipeline.scoring.schemas import AutomatedScores
from feedback_pipeline.scoring.week import score_week, scores_metadata
from feedback_pipeline.warehouse import read_week, replace_week_frame

JUDGE_CONFIGURED_CHECK = "judge_configured"


class ScoringConfig(dg.Config):
    judge_rubric_version: str | None = None  # None: the newest version on disk


@dg.asset(
    partitions_def=weekly,
    deps=["raw_traces"],
    pool=pools.WEEKLY,
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
    rubric = load_rubric(RUBRIC_ID, config.judge_rubric_version)
    with home.warehouse() as con:
        traces = read_week(con, "raw_traces", week)
    # The cache opens the warehouse only to read and to write: no connection is held
    # while the judge calls run, so other writers are not locked out for that long.
    out, stats = score_week(traces, rubric, judge, JudgeCache(connect=home.warehouse))
    with home.warehouse() as con:
        rows = replace_week_frame(con, "automated_scores", week, out)
    metadata = scores_metadata(out, stats, rubric, judge.is_configured)
    if "judge_budget_warning" in metadata:
        context.log.warning(metadata["judge_budget_warning"])
    return dg.MaterializeResult(
        metadata={"dagster/row_count": rows, **metadata},
        check_results=[dg.AssetCheckResult(
            check_name=JUDGE_CONFIGURED_CHECK,
            passed=judge.is_configured,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"status": "configured" if judge.is_configured else "judge not configured"},
        )],
    )


automated_scores_schema_check = pandera_check("automated_scores", AutomatedScores)
