"""release_changes and impact_metrics: every change's before/after figures, recomputed from the weekly tables."""

from datetime import date

import dagster as dg
import polars as pl

from feedback_pipeline.checks import markdown_table, column_schema, pandera_check
from feedback_pipeline.publish import publish_table, write_analyst_db
from feedback_pipeline.impact.changes import DeclaredChangesError, detect_changes, read_declared_changes
from feedback_pipeline.impact.loop_health import FLAG_COLUMNS, LOOP_HEALTH_SCHEMA, loop_health as compute_loop_health
from feedback_pipeline.impact.replay import AgentReplayResource, ReplayCache, paired_summary, replay_cases
from feedback_pipeline.impact.report import write_report
from feedback_pipeline.impact.schemas import ImpactMetrics, LoopHealth, ReleaseChanges
from feedback_pipeline.impact.stats import COMPARISON_SCHEMA, compare_change
from feedback_pipeline.labels.gold import gold_labels
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource
from feedback_pipeline.rubrics import load_rubric
from feedback_pipeline.warehouse import replace_table, table_exists

LOOP_HEALTH_CHECK = "loop_is_improving"

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
        replace_table(con, "release_changes", changes)
    shown = changes.select("change_id", "concurrent", "rollout_weeks", "detected", "declared")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": changes.height,
        "changes": dg.MetadataValue.md(markdown_table(shown)),
        "declared_file": next((n for n in DECLARED_FILES if (home.root / n).exists()), "none"),
    })


@dg.asset(
    deps=["release_changes", "automated_scores", "annotation_queue", "human_labels"],
    pool="warehouse",
    metadata={"dagster/column_schema": column_schema(ImpactMetrics)},
    **_COMMON,
)
def impact_metrics(context: dg.AssetExecutionContext, home: FeedbackHome, judge: JudgeResource,
                   agent: AgentReplayResource) -> dg.MaterializeResult:
    """Per change and metric: effect (after − before) with 95 % CI, p, BH-adjusted p, n per side, MDE and a proxy-gaming flag."""
    with home.warehouse() as con:
        changes = con.execute("SELECT * FROM release_changes").pl()
        scores = con.execute(f"SELECT {_SCORE_COLUMNS} FROM automated_scores").pl()
        labeled = labeled_sample(con) if table_exists(con, "human_labels") else None
        parts = []
        for change in changes.filter(pl.col("detected")).iter_rows(named=True):
            agent_id = change["agent_id"]
            mine = labeled.filter(pl.col("agent_id") == agent_id) if labeled is not None else None
            parts.append(compare_change(change, scores.filter(pl.col("agent_id") == agent_id), mine, mine))
            if agent.is_configured and judge.is_configured and table_exists(con, "eval_set_snapshots"):
                parts.append(_replay_rows(con, change, agent, judge))
        metrics = pl.concat(parts, how="diagonal_relaxed").select(list(COMPARISON_SCHEMA)) if parts \
            else pl.DataFrame(schema=COMPARISON_SCHEMA)
        replace_table(con, "impact_metrics", metrics)
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
        "headline": dg.MetadataValue.md(markdown_table(headline)),
    })


def _replay_rows(con, change: dict, agent: AgentReplayResource, judge: JudgeResource) -> pl.DataFrame:
    """Paired eval replay of the agent's latest held-out snapshot (and its canary) under the
    old and the new version: McNemar rows `eval_pass_rate` / `eval_pass_rate:canary`."""
    cases = con.execute("""
        SELECT * FROM eval_set_snapshots WHERE agent_id = ?
        QUALIFY week = max(week) OVER ()""", [change["agent_id"]]).pl()
    replayed = replay_cases(cases, (change["before_version"], change["after_version"]), agent, judge,
                            load_rubric("agent_quality"), ReplayCache(con))
    summary = paired_summary(replayed)
    rows = []
    for metric, key in (("eval_pass_rate", "overall"), ("eval_pass_rate:canary", "canary")):
        result = summary.get(key) or {}
        rows.append({**{c: change[c] for c in ("agent_id", "change_id", "dimension", "before_version",
                                               "after_version")},
                     "metric": metric, "method": "mcnemar", "proxy_gaming": False,
                     **{k: v for k, v in result.items() if k in COMPARISON_SCHEMA},
                     "notes": f"paired replay of {summary['n_complete']} cases"})
    return pl.DataFrame(rows).cast({k: v for k, v in COMPARISON_SCHEMA.items() if k in rows[0]}, strict=False)


@dg.asset(
    deps=["automated_scores", "quality_estimates", "eval_set_snapshots", "human_labels", "judge_calibration"],
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(LOOP_HEALTH_CHECK, asset="loop_health", description=(
        "WARN when an agent's held-out pass rate has not improved for 4 weeks, its eval set "
        "stopped growing, or its input mix drifted (PSI > 0.25)."))],
    **_COMMON,
)
def loop_health(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Week over week per agent: held-out pass rate, eval-set size and coverage, label throughput, judge–human κ, share rated, input drift."""
    with home.warehouse() as con:
        def table(sql: str, name: str) -> pl.DataFrame | None:
            return con.execute(sql).pl() if table_exists(con, name) else None

        mix = table("SELECT week, agent_id, intent, channel, count(*) AS n_traces, count(thumbs) AS n_rated "
                    "FROM automated_scores GROUP BY ALL", "automated_scores")
        snapshots = table("SELECT agent_id, week, split, verdict, failure_category FROM eval_set_snapshots",
                          "eval_set_snapshots")
        labels = table("SELECT s.agent_id, l.imported_at, l.labeled_at FROM human_labels l "
                       "JOIN automated_scores s USING (trace_id) WHERE l.source <> 'escalation'", "human_labels")
        health = compute_loop_health(
            mix if mix is not None else pl.DataFrame(schema={"week": pl.Date, "agent_id": pl.String}),
            table("SELECT * FROM quality_estimates", "quality_estimates"),
            snapshots if snapshots is not None else pl.DataFrame(schema={"week": pl.Date, "agent_id": pl.String}),
            labels.with_columns(week=pl.col("labeled_at").dt.date().dt.truncate("1w")).drop("imported_at", "labeled_at")
            if labels is not None else None,
            table("SELECT * FROM judge_calibration", "judge_calibration"),
        )
        replace_table(con, "loop_health", health)
    latest = health.sort("week").group_by("agent_id").last().sort("agent_id")
    flagged = latest.filter(pl.any_horizontal(*FLAG_COLUMNS))
    return dg.MaterializeResult(
        metadata={"dagster/row_count": health.height,
                  "latest_week": dg.MetadataValue.md(markdown_table(latest.select(
                      "agent_id", "week", "pass_rate", "eval_set_size", "labels_imported", "share_rated", "flags")))},
        check_results=[dg.AssetCheckResult(
            check_name=LOOP_HEALTH_CHECK, passed=flagged.is_empty(), severity=dg.AssetCheckSeverity.WARN,
            metadata={"flags": dg.MetadataValue.json(
                {r["agent_id"]: r["flags"] for r in flagged.iter_rows(named=True)})})],
    )


@dg.asset(
    partitions_def=weekly,
    deps=["quality_estimates", "impact_metrics", "loop_health", "release_changes"],
    pool="warehouse",
    **{**_COMMON, "kinds": {"html", "matplotlib"}},
)
def weekly_report(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """The week's self-contained HTML report: estimates vs the naive thumbs rate, each change's forest plot, loop health."""
    week = context.partition_key
    with home.warehouse() as con:
        def table(name: str) -> pl.DataFrame | None:
            return con.execute(f"SELECT * FROM {name}").pl() if table_exists(con, name) else None

        paths = write_report(home.exports / "reports", week, table("quality_estimates"), table("impact_metrics"),
                             table("loop_health"), table("release_changes"))
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str(paths["html"])),
        "report_url": dg.MetadataValue.url(paths["html"].resolve().as_uri()),
        "figures": dg.MetadataValue.json(sorted(str(p) for k, p in paths.items() if k != "html")),
    })


release_changes_schema_check = pandera_check("release_changes", ReleaseChanges, partitioned=False)
impact_metrics_schema_check = pandera_check("impact_metrics", ImpactMetrics, partitioned=False)
loop_health_schema_check = pandera_check("loop_health", LoopHealth, partitioned=False)
