"""The loop's weekly vital signs per agent, one small frame per source, keyed by (agent_id, week).

Traffic and share rated, intent / channel PSI against the previous week, the eval set's size
and category coverage, the held-out pass rate (by replay, else from the logged answers) with its
clustered CI and month-over-month change (`heldout_stats.py`), replay errors, labels imported, the judge–human κ of the month,
the estimated failure rate. `loop_health.py` joins them on a calendar grid; the flags that read
them live in `loop_flags.py`. Definitions: the `loop_health` module docstring.
"""

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from feedback_pipeline.impact.drift import population_stability_index
from feedback_pipeline.weeks import week_expr

KEYS = ("agent_id", "week")


def traffic(mix: pl.DataFrame) -> pl.DataFrame:
    """agent_id, week, n_traces, share_rated."""
    out = mix.group_by(*KEYS).agg(n_traces=pl.col("n_traces").sum().cast(pl.Int64),
                                  n_rated=pl.col("n_rated").sum().cast(pl.Int64))
    return out.with_columns(
        share_rated=pl.when(pl.col("n_traces") > 0).then(pl.col("n_rated") / pl.col("n_traces"))).drop("n_rated")


def psi(mix: pl.DataFrame, column: str) -> pl.DataFrame:
    """agent_id, week, <column>_psi against the agent's previous calendar week."""
    counts = (mix.with_columns(pl.col(column).cast(pl.String).fill_null("(null)"))
              .group_by(*KEYS, column).agg(pl.col("n_traces").sum()))
    by_week = {key: dict(zip(g[column], g["n_traces"])) for key, g in counts.group_by(*KEYS)}
    rows = []
    for (agent, week), actual in by_week.items():
        expected = by_week.get((agent, week - timedelta(days=7)))
        ok = expected and sum(expected.values()) > 0 and sum(actual.values()) > 0
        rows.append((agent, week, population_stability_index(expected, actual) if ok else None))
    return pl.DataFrame(rows, schema={"agent_id": pl.String, "week": pl.Date, f"{column}_psi": pl.Float64},
                        orient="row")


def snapshot_stats(snapshots: pl.DataFrame, categories: Sequence[str]) -> pl.DataFrame:
    """agent_id, week, eval_set_size, category_coverage, categories_missing."""
    categories = list(categories)
    if not snapshots.height:  # polars cannot broadcast the category list over zero groups
        return snapshots.group_by(*KEYS).agg(eval_set_size=pl.len().cast(pl.Int64), category_coverage=pl.lit(0.0),
                                             categories_missing=pl.lit(None, pl.String))
    return snapshots.group_by(*KEYS).agg(
        eval_set_size=pl.len().cast(pl.Int64),
        _seen=pl.col("failure_category").filter(pl.col("failure_category").is_in(categories)).unique(),
    ).with_columns(
        category_coverage=pl.col("_seen").list.len() / max(len(categories), 1),
        categories_missing=pl.lit(categories, dtype=pl.List(pl.String))
        .list.set_difference("_seen").list.sort().list.join(", ").replace("", None),
    ).drop("_seen")


def graded_cases(snapshots: pl.DataFrame, replay: pl.DataFrame | None) -> pl.DataFrame:
    """agent_id, week, pass_rate_source, conversation_id, passed: one row per graded held-out case.
    An agent-week with any replay verdict takes the replay (`heldout_replay`: test split + canary,
    cases with an error left out); otherwise the logged answers' gold verdicts of the test split."""
    cols = {"agent_id": pl.String, "week": pl.Date, "pass_rate_source": pl.String, "conversation_id": pl.String,
            "passed": pl.Boolean}

    def shaped(frame: pl.DataFrame, source: str) -> pl.DataFrame:
        conv = pl.col("conversation_id") if "conversation_id" in frame.columns else pl.lit(None)
        return frame.select(pl.col("agent_id").cast(pl.String), pl.col("week").cast(pl.Date),
                            pass_rate_source=pl.lit(source), conversation_id=conv.cast(pl.String),
                            passed=pl.col("verdict") == "pass")

    replayed = shaped(replay.filter(pl.col("verdict").is_not_null()), "replay") if replay is not None else None
    logged = shaped(snapshots.filter(pl.col("split") == "test"), "logged_answers") if snapshots.height else None
    if logged is not None and replayed is not None:
        logged = logged.join(replayed.select(*KEYS).unique(), on=list(KEYS), how="anti")
    parts = [p for p in (replayed, logged) if p is not None]
    return pl.concat(parts).select(list(cols)) if parts else pl.DataFrame(schema=cols)


def pass_rates(graded: pl.DataFrame, alpha: float, month_weeks: int = 4) -> pl.DataFrame:
    """agent_id, week, pass_rate_source, test_cases, test_passed, pass_rate with its CI, and the
    change from `month_weeks` earlier (same source) with its CI (`heldout_stats`)."""
    from feedback_pipeline.impact.heldout_stats import pass_rate_change, pass_rate_ci

    groups = {(a, w): g for (a, w), g in graded.group_by(*KEYS)}

    def clusters(g: pl.DataFrame):
        return None if g["conversation_id"].null_count() else g["conversation_id"].to_list()

    rows = []
    for (agent, week), g in sorted(groups.items()):
        rate, low, high = pass_rate_ci(g["passed"].to_numpy(), clusters(g), alpha)
        before = groups.get((agent, week - timedelta(weeks=month_weeks)))
        same = before is not None and before["pass_rate_source"][0] == g["pass_rate_source"][0]
        change = pass_rate_change(g["passed"].to_numpy(), clusters(g), before["passed"].to_numpy(),
                                  clusters(before), alpha) if same else (None, None, None)
        rows.append((agent, week, g["pass_rate_source"][0], g.height, int(g["passed"].sum()), rate, low, high,
                     *change))
    return pl.DataFrame(rows, orient="row", schema={
        "agent_id": pl.String, "week": pl.Date, "pass_rate_source": pl.String, "test_cases": pl.Int64,
        "test_passed": pl.Int64, "pass_rate": pl.Float64, "pass_rate_ci_low": pl.Float64,
        "pass_rate_ci_high": pl.Float64, "pass_rate_mom_change": pl.Float64, "pass_rate_mom_ci_low": pl.Float64,
        "pass_rate_mom_ci_high": pl.Float64})


def replay_errors(replay: pl.DataFrame | None) -> pl.DataFrame | None:
    """agent_id, week, replay_errors: held-out cases the week's replay could not grade."""
    if replay is None:
        return None
    return replay.group_by(*KEYS).agg(replay_errors=pl.col("error").is_not_null().sum().cast(pl.Int64))


def label_counts(labels: pl.DataFrame | None) -> pl.DataFrame | None:
    """agent_id, week, labels_imported (week: given, or the UTC Monday of imported_at)."""
    if labels is None:
        return None
    if "week" not in labels.columns:
        stamp = pl.col("imported_at")
        if isinstance(labels.schema["imported_at"], pl.Datetime) and labels.schema["imported_at"].time_zone:
            stamp = stamp.dt.convert_time_zone("UTC")
        labels = labels.with_columns(week=week_expr(stamp))
    return (labels.filter(pl.col("agent_id").is_not_null())
            .group_by(*KEYS).agg(labels_imported=pl.len().cast(pl.Int64)))


def monthly_kappa(calibration: pl.DataFrame | None) -> pl.DataFrame | None:
    """month, judge_kappa (n_compared-weighted over rubric versions)."""
    if calibration is None:
        return None
    weight = pl.col("n_compared").cast(pl.Float64) if "n_compared" in calibration.columns else pl.lit(1.0)
    return (calibration.filter(pl.col("cohens_kappa").is_not_null()).with_columns(_w=weight)
            .group_by("month").agg(judge_kappa=(pl.col("cohens_kappa") * pl.col("_w")).sum() / pl.col("_w").sum()))


def failure_rates(estimates: pl.DataFrame | None, method: str) -> pl.DataFrame | None:
    """agent_id, week, failure_rate with its CI (the `method` rows of `quality_estimates`)."""
    if estimates is None:
        return None
    return estimates.filter((pl.col("metric") == "failure_rate") & (pl.col("method") == method)).select(
        *KEYS, failure_rate="estimate", failure_rate_ci_low="ci_low", failure_rate_ci_high="ci_high")
