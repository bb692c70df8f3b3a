"""What the impact stage's assets read from the warehouse (and the home folder), as Polars frames.

One function per asset input, so the asset bodies read load → compute → write. SQL and
missing-table fallbacks live here; no statistics, no Dagster.
"""

from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.frames import empty_frame
from feedback_pipeline.impact.declared import declared_file, read_declared_changes
from feedback_pipeline.labels.gold import gold_labels
from feedback_pipeline.scoring.schemas import AutomatedScores
from feedback_pipeline.warehouse import table_exists
from feedback_pipeline.weeks import week_expr

# The `automated_scores` columns the change detection and comparisons read.
SCORE_COLUMNS = (
    "week", "trace_id", "conversation_id", "agent_id", "prompt_version", "retrieval_version", "model", "thumbs",
    "escalated", "escalation_reason", "user_rewrote", "latency_ms", "response_chars", "is_refusal",
    "has_disclaimer", "tool_error_count", "judge_verdict", "judge_failure_category", "judge_selection_prob",
)


def table_or_none(con: duckdb.DuckDBPyConnection, table: str, sql: str | None = None) -> pl.DataFrame | None:
    """`sql` (default: the whole table) as a frame, None when the table does not exist yet."""
    return con.execute(sql or f"SELECT * FROM {table}").pl() if table_exists(con, table) else None


def scores(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """SCORE_COLUMNS of every `automated_scores` row (an empty frame before any scoring)."""
    found = table_or_none(con, "automated_scores", f"SELECT {', '.join(SCORE_COLUMNS)} FROM automated_scores")
    return found if found is not None else empty_frame(AutomatedScores).select(SCORE_COLUMNS)


def declared_changes(root: Path) -> pl.DataFrame | None:
    """The home folder's declared changes (changes.yaml / .yml / .csv), if any;
    raises `declared.DeclaredChangesError` naming every fault."""
    path = declared_file(root)
    return read_declared_changes(path) if path is not None else None


def labeled_sample(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """Every queue row with its gold human label (newest rubric version per trace), None before any label."""
    if not (table_exists(con, "human_labels") and table_exists(con, "annotation_queue")):
        return None
    queue = con.execute(
        "SELECT week, agent_id, trace_id, stratum, inclusion_prob, stratum_sample_size, conversation_id "
        "FROM annotation_queue").pl()
    gold = gold_labels(con).sort("rubric_version").unique("trace_id", keep="last")
    return queue.join(gold.select("trace_id", "verdict", "failure_category", "rubric_version"),
                      on="trace_id", how="inner")


def loop_inputs(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame | None]:
    """The keyword arguments of `loop_health.loop_health`, from whichever tables exist."""
    keys = {"week": pl.Date, "agent_id": pl.String}
    mix = table_or_none(con, "automated_scores", "SELECT week, agent_id, intent, channel, count(*) AS n_traces, "
                        "count(thumbs) AS n_rated FROM automated_scores GROUP BY ALL")
    snapshots = table_or_none(con, "eval_set_snapshots", "SELECT agent_id, week, split, verdict, failure_category, "
                              "conversation_id FROM eval_set_snapshots")
    # A fresh home: labels (escalations) may exist before any week is scored.
    labels = None if not table_exists(con, "automated_scores") else table_or_none(con, "human_labels", "SELECT s.agent_id, l.imported_at, l.labeled_at FROM human_labels l "
                           "JOIN automated_scores s USING (trace_id) WHERE l.source <> 'escalation'")
    return {
        "scores_weekly_mix": mix if mix is not None else pl.DataFrame(schema=keys),
        "estimates": table_or_none(con, "quality_estimates"),
        "snapshots": snapshots if snapshots is not None else pl.DataFrame(schema=keys),
        "labels": labels.with_columns(week=week_expr(pl.col("labeled_at")))
        .drop("imported_at", "labeled_at") if labels is not None else None,
        "calibration": table_or_none(con, "judge_calibration"),
        "replay": table_or_none(con, "heldout_replay", "SELECT week, agent_id, case_id, conversation_id, verdict, "
                                "error FROM heldout_replay"),
    }


def heldout_cases(con: duckdb.DuckDBPyConnection, week: str) -> pl.DataFrame:
    """The `eval_set_snapshots` rows of `week` (empty before any snapshot)."""
    week = date.fromisoformat(str(week)).isoformat()
    found = table_or_none(con, "eval_set_snapshots", f"SELECT * FROM eval_set_snapshots WHERE week = DATE '{week}'")
    return found if found is not None else pl.DataFrame(schema={"agent_id": pl.String, "case_id": pl.String})


def version_traffic(con: duckdb.DuckDBPyConnection, week: str) -> pl.DataFrame:
    """agent_id, week, prompt_version, retrieval_version, model, n: traces per configuration and
    week up to `week` (what `heldout_replay.live_versions` reads)."""
    week = date.fromisoformat(str(week)).isoformat()
    found = table_or_none(con, "automated_scores", "SELECT agent_id, week, prompt_version, retrieval_version, model, "
                          f"count(*) AS n FROM automated_scores WHERE week <= DATE '{week}' GROUP BY ALL")
    return found if found is not None else pl.DataFrame(schema={"agent_id": pl.String, "week": pl.Date})


def report_inputs(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame | None]:
    """The frame arguments of `weekly_report.write_report` (None for a table not written yet)."""
    return {"estimates": table_or_none(con, "quality_estimates"), "impact": table_or_none(con, "impact_metrics"),
            "loop": table_or_none(con, "loop_health"), "releases": table_or_none(con, "release_changes")}
