"""release_changes, impact_metrics, heldout_replay, loop_health and weekly_report: each change's
before/after figures, the live agent's held-out pass rate by replay, and the loop's health,
recomputed from the weekly tables.

Asset bodies only (load → compute → write → metadata): reads in `load.py`, logic in the
stage's pure modules, table shapes in `schemas.py`.
"""

from datetime import date

import dagster as dg
import polars as pl

from feedback_pipeline import pools
from feedback_pipeline.checks import column_schema, markdown_table, pandera_check
from feedback_pipeline.frames import empty_frame
from feedback_pipeline.impact import load
from feedback_pipeline.impact.compare import impact_table
from feedback_pipeline.impact.declared import DeclaredChangesError, declared_file
from feedback_pipeline.impact.detect import detect_changes
from feedback_pipeline.impact.heldout_replay import live_versions, replay_week
from feedback_pipeline.impact.loop_flags import FLAG_COLUMNS
from feedback_pipeline.impact.loop_health import loop_health as compute_loop_health
from feedback_pipeline.impact.replay import AgentReplayResource, ReplayCache, replayer
from feedback_pipeline.impact.schemas import HeldoutReplay, ImpactMetrics, LoopHealth, ReleaseChanges
from feedback_pipeline.impact.weekly_report import write_report
from feedback_pipeline.partitions import weekly
from feedback_pipeline.publish import publish_table, write_analyst_db
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.judge import JudgeResource
from feedback_pipeline.warehouse import replace_table, replace_week_frame

LOOP_HEALTH_CHECK = "loop_is_improving"
REPLAY_CHECK = "every_case_graded"
HEADLINE_METRICS = ("failure_rate", "judge_failure_rate", "thumbs_down_rate", "response_chars")

_COMMON = dict(group_name="impact", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "impact"})


@dg.asset(
    deps=["automated_scores"],
    pool=pools.SERIAL,
    metadata={"dagster/column_schema": column_schema(ReleaseChanges)},
    **_COMMON,
)
def release_changes(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Every change of prompt, retrieval or model per agent seen in traffic (with A/B overlap) or declared in the home folder."""
    try:
        declared = load.declared_changes(home.root)
    except DeclaredChangesError as exc:
        raise dg.Failure(description=str(exc), metadata={"file": str(exc.path)}) from exc
    with home.warehouse() as con:
        changes = detect_changes(load.scores(con), declared)
        replace_table(con, "release_changes", changes)
    shown = changes.select("change_id", "concurrent", "rollout_weeks", "detected", "declared")
    declared_path = declared_file(home.root)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": changes.height,
        "changes": dg.MetadataValue.md(markdown_table(shown)),
        "declared_file": declared_path.name if declared_path else "none",
    })


@dg.asset(
    deps=["release_changes", "automated_scores", "annotation_queue", "human_labels"],
    pool=pools.SERIAL,
    metadata={"dagster/column_schema": column_schema(ImpactMetrics)},
    **_COMMON,
)
def impact_metrics(context: dg.AssetExecutionContext, home: FeedbackHome, judge: JudgeResource,
                   agent: AgentReplayResource) -> dg.MaterializeResult:
    """Per change and metric: effect (after − before) with 95 % CI, p, BH-adjusted p, n per side, MDE and a proxy-gaming flag."""
    with home.warehouse() as con:
        changes = con.execute("SELECT * FROM release_changes").pl()
        metrics = impact_table(changes, load.scores(con), load.labeled_sample(con), replayer(con, agent, judge))
        replace_table(con, "impact_metrics", metrics)
    publish_table(metrics, home.exports, "impact_metrics")
    write_analyst_db(home.exports)
    headline = metrics.filter(
        pl.col("metric").is_in(HEADLINE_METRICS) & pl.col("method").is_in(["hajek", "mean"])
    ).select("change_id", "metric", "method", pl.col("effect").round(4), pl.col("ci_low").round(4),
             pl.col("ci_high").round(4), pl.col("p_adjusted").round(4), "proxy_gaming")
    flagged = metrics.filter(pl.col("proxy_gaming"))["change_id"].unique().to_list()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": metrics.height,
        "changes_compared": metrics["change_id"].n_unique(),
        "proxy_gaming_flagged": dg.MetadataValue.json(flagged),
        "headline": dg.MetadataValue.md(markdown_table(headline)),
    })


@dg.asset(
    partitions_def=weekly,
    deps=["eval_set_snapshots", "automated_scores"],
    pool=pools.WEEKLY,
    metadata={"dagster/column_schema": column_schema(HeldoutReplay)},
    check_specs=[dg.AssetCheckSpec(REPLAY_CHECK, asset="heldout_replay", description=(
        "WARN when a held-out case has no verdict (the agent endpoint or the judge failed on it)."))],
    # Shown (and selected by group) beside the weekly eval-set snapshots it replays.
    **{**_COMMON, "group_name": "evalset"},
)
def heldout_replay(context: dg.AssetExecutionContext, home: FeedbackHome, judge: JudgeResource,
                   agent: AgentReplayResource) -> dg.MaterializeResult:
    """The week's held-out cases (test split + canary) answered by the agent version live that week and judged; empty without an agent endpoint (loop_health then uses the logged answers)."""
    week = context.partition_key
    with home.warehouse() as con:
        cases = load.heldout_cases(con, week)
        versions = live_versions(load.version_traffic(con, week), week)
        rows = (replay_week(cases, versions, agent, judge, ReplayCache(con)) if agent.is_configured
                else empty_frame(HeldoutReplay))
        replace_week_frame(con, "heldout_replay", date.fromisoformat(week), rows)
    errors = rows.filter(pl.col("error").is_not_null())
    by_agent = rows.group_by("agent_id", "version").agg(
        cases=pl.len(), passed=(pl.col("verdict") == "pass").sum(), errors=pl.col("error").is_not_null().sum(),
        agent_cached=pl.col("agent_cached").sum()).sort("agent_id")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": rows.height,
                  "source": "replay" if agent.is_configured else "agent not configured: loop_health uses the "
                                                                  "logged answers (set FEEDBACK_PIPELINE_AGENT_BASE_URL)",
                  "by_agent": dg.MetadataValue.md(markdown_table(by_agent))},
        check_results=[dg.AssetCheckResult(
            check_name=REPLAY_CHECK, passed=errors.is_empty(), severity=dg.AssetCheckSeverity.WARN,
            metadata={"errors": errors.height, "cases": rows.height,
                      "first_errors": dg.MetadataValue.md(markdown_table(
                          errors.select("agent_id", "case_id", "error").head(10)))})],
    )


@dg.asset(
    deps=["automated_scores", "quality_estimates", "eval_set_snapshots", "heldout_replay", "human_labels",
          "judge_calibration"],
    pool=pools.SERIAL,
    check_specs=[dg.AssetCheckSpec(LOOP_HEALTH_CHECK, asset="loop_health", description=(
        "WARN when an agent's held-out pass rate is not climbing (by replay: month-over-month change "
        "not above 0 at 95 %; from logged answers: no new high for 4 weeks), its eval set "
        "stopped growing, or its input mix drifted (PSI > 0.25)."))],
    **_COMMON,
)
def loop_health(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Week over week per agent: held-out pass rate, eval-set size and coverage, label throughput, judge–human κ, share rated, input drift."""
    with home.warehouse() as con:
        health = compute_loop_health(**load.loop_inputs(con))
        replace_table(con, "loop_health", health)
    latest = health.sort("week").group_by("agent_id").last().sort("agent_id")
    flagged = latest.filter(pl.any_horizontal(*FLAG_COLUMNS))
    return dg.MaterializeResult(
        metadata={"dagster/row_count": health.height,
                  "latest_week": dg.MetadataValue.md(markdown_table(latest.select(
                      "agent_id", "week", "pass_rate", "pass_rate_source", "pass_rate_mom_change", "eval_set_size", "labels_imported", "share_rated", "flags")))},
        check_results=[dg.AssetCheckResult(
            check_name=LOOP_HEALTH_CHECK, passed=flagged.is_empty(), severity=dg.AssetCheckSeverity.WARN,
            metadata={"flags": dg.MetadataValue.json(
                {r["agent_id"]: r["flags"] for r in flagged.iter_rows(named=True)})})],
    )


@dg.asset(
    partitions_def=weekly,
    deps=["quality_estimates", "impact_metrics", "loop_health", "release_changes", "annotation_queue"],
    pool=pools.WEEKLY,
    **{**_COMMON, "kinds": {"html", "matplotlib"}},
)
def weekly_report(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """The week's self-contained HTML report: estimates vs the naive thumbs rate, each change's forest plot, loop health."""
    with home.warehouse() as con:
        inputs = load.report_inputs(con)
    paths = write_report(home.exports / "reports", context.partition_key, **inputs,
                         planning=_labels_needed(context.instance, context.partition_key))
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str(paths["html"])),
        "report_url": dg.MetadataValue.url(paths["html"].resolve().as_uri()),
        "figures": dg.MetadataValue.json(sorted(str(p) for k, p in paths.items() if k != "html")),
    })


def _labels_needed(instance: dg.DagsterInstance, week: str) -> pl.DataFrame | None:
    """The planning figure the week's `annotation_queue` run computed (its metadata), so the
    report shows what the queue's own design and configuration predict."""
    [*records] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("annotation_queue"), asset_partitions=[week]), limit=1, ascending=False).records
    entry = records[0].asset_materialization.metadata.get("labels_needed_by_agent") if records else None
    return pl.DataFrame(entry.value) if entry is not None and entry.value else None


release_changes_schema_check = pandera_check("release_changes", ReleaseChanges, partitioned=False)
impact_metrics_schema_check = pandera_check("impact_metrics", ImpactMetrics, partitioned=False)
loop_health_schema_check = pandera_check("loop_health", LoopHealth, partitioned=False)
heldout_replay_schema_check = pandera_check("heldout_replay", HeldoutReplay)
