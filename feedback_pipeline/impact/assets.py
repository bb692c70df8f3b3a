"""release_changes and impact_metrics: every change's before/after figures, recomputed from the weekly tables."""

import dagster as dg
import polars as pl

from feedback_pipeline.checks import _markdown, column_schema, pandera_check
from feedback_pipeline.evalset.publish import publish_table, write_analyst_db
from feedback_pipeline.impact.changes import DeclaredChangesError, detect_changes, read_declared_changes
from feedback_pipeline.impact.schemas import ImpactMetrics, ReleaseChanges
from feedback_pipeline.impact.stats import COMPARISON_SCHEMA, compare_change
from feedback_pipeline.labels.assets import _replace_table, gold_labels
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse import table_exists, transaction

DECLARED_FILES = ("changes.yaml", "changes.yml", "changes.csv")
_COMMON = dict(group_name="impact", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "impact"})
_SCORE_COLUMNS = (
    "week, trace_id, conversation_id, agent_id, prompt_version, retrieval_version, model, thumbs, "
    "escalated, escalation_reason, user_rewrote, latency_ms, response_chars, is_refusal, has_disclaimer, "
    "tool_error_count, judge_verdict, judge_failure_category, judge_selection_prob"
)


def declared_changes(home: FeedbackHome) -> pl.DataFrame | None:
    """Manually declared changes from the home folder (changes.yaml or changes.csv), if any."""
    for name in DECLARED_FILES:
        path = home.root / name
        if path.exists():
            try:
                return read_declared_changes(path)
            except DeclaredChangesError as exc:
                raise dg.Failure(description=str(exc), metadata={"file": str(path)}) from exc
    return None


def labeled_sample(con) -> pl.DataFrame:
    """Every queue row with its gold human label (newest rubric version per trace)."""
    queue = con.execute(
        "SELECT week, agent_id, trace_id, stratum, inclusion_prob, stratum_sample_size, conversation_id "
        "FROM annotation_queue").pl()
    gold = gold_labels(con).sort("rubric_version").unique("trace_id", keep="last")
    return queue.join(gold.select("trace_id", "verdict", "failure_category", "rubric_version"),
                      on="trace_id", how="inner")


@dg.asset(
    deps=["automated_scores"],
    pool="warehouse",
    metadata={"dagster/column_schema": column_schema(ReleaseChanges)},
    **_COMMON,
)
def release_changes(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Every change of prompt, retrieval or model per agent seen in traffic (with A/B overlap) or declared in the home folder."""
    declared = declared_changes(home)
    with home.warehouse() as con:
        scores = con.execute(f"SELECT {_SCORE_COLUMNS} FROM automated_scores").pl() \
            if table_exists(con, "automated_scores") else None
        changes = detect_changes(scores, declared) if scores is not None and scores.height else \
            detect_changes(pl.DataFrame(schema={c.strip(): pl.String for c in _SCORE_COLUMNS.split(",")}), declared)
        with transaction(con):
            _replace_table(con, "release_changes", changes)
    shown = changes.select("change_id", "concurrent", "rollout_weeks", "detected", "declared")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": changes.height,
        "changes": dg.MetadataValue.md(_markdown(shown)),
        "declared_file": next((n for n in DECLARED_FILES if (home.root / n).exists()), "none"),
    })


@dg.asset(
    deps=["release_changes", "automated_scores", "annotation_queue", "human_labels"],
    pool="warehouse",
    metadata={"dagster/column_schema": column_schema(ImpactMetrics)},
    **_COMMON,
)
def impact_metrics(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Per change and metric: effect (after − before) with 95 % CI, p, BH-adjusted p, n per side, MDE and a proxy-gaming flag."""
    with home.warehouse() as con:
        changes = con.execute("SELECT * FROM release_changes").pl()
        scores = con.execute(f"SELECT {_SCORE_COLUMNS} FROM automated_scores").pl()
        labeled = labeled_sample(con) if table_exists(con, "human_labels") else None
        parts = []
        for change in changes.filter(pl.col("detected")).iter_rows(named=True):
            agent = change["agent_id"]
            mine = labeled.filter(pl.col("agent_id") == agent) if labeled is not None else None
            parts.append(compare_change(change, scores.filter(pl.col("agent_id") == agent), mine, mine))
        metrics = pl.concat(parts) if parts else pl.DataFrame(schema=COMPARISON_SCHEMA)
        with transaction(con):
            _replace_table(con, "impact_metrics", metrics)
    publish_table(metrics, home.exports, "impact_metrics")
    write_analyst_db(home.exports)
    headline = metrics.filter(
        pl.col("metric").is_in(["failure_rate", "judge_failure_rate", "thumbs_down_rate", "response_chars"])
        & pl.col("method").is_in(["hajek", "mean"])
    ).select("change_id", "metric", "method", pl.col("effect").round(4), pl.col("ci_low").round(4),
             pl.col("ci_high").round(4), pl.col("p_adjusted").round(4), "proxy_gaming")
    flagged = metrics.filter(pl.col("proxy_gaming"))["change_id"].unique().to_list()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": metrics.height,
        "changes_compared": len(parts),
        "proxy_gaming_flagged": dg.MetadataValue.json(flagged),
        "headline": dg.MetadataValue.md(_markdown(headline)),
    })


release_changes_schema_check = pandera_check("release_changes", ReleaseChanges, partitioned=False)
impact_metrics_schema_check = pandera_check("impact_metrics", ImpactMetrics, partitioned=False)
