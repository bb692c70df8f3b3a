"""The loop's weekly vital signs per agent, one small frame per source, keyed by (agent_id, week).

Traffic and share rated, intent / channel PSI against the previous week, the eval set's size,
pass rate (Wilson CI) and category coverage, labels imported, the judge–human κ of the month,
the estimated failure rate. `loop_health.py` joins them on a calendar grid; the flags that read
them live in `loop_flags.py`. Definitions: the `loop_health` module docstring.
"""

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
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


def snapshot_stats(snapshots: pl.DataFrame, categories: Sequence[str], alpha: float) -> pl.DataFrame:
    """agent_id, week, eval_set_size, test_cases, test_passed, category_coverage,
    categories_missing, pass_rate with its Wilson CI."""
    categories = list(categories)
    test = pl.col("split") == "test"
    out = snapshots.group_by(*KEYS).agg(
        eval_set_size=pl.len().cast(pl.Int64),
        test_cases=test.sum().cast(pl.Int64),
        test_passed=(test & (pl.col("verdict") == "pass")).sum().cast(pl.Int64),
        _seen=pl.col("failure_category").filter(pl.col("failure_category").is_in(categories)).unique(),
    ).with_columns(
        category_coverage=pl.col("_seen").list.len() / max(len(categories), 1),
        categories_missing=pl.lit(categories, dtype=pl.List(pl.String))
        .list.set_difference("_seen").list.sort().list.join(", ").replace("", None),
    ).drop("_seen") if snapshots.height else snapshots.group_by(*KEYS).agg(
        # No snapshot yet: polars cannot broadcast the category list over zero groups.
        eval_set_size=pl.len().cast(pl.Int64), test_cases=pl.len().cast(pl.Int64),
        test_passed=pl.len().cast(pl.Int64), category_coverage=pl.lit(0.0),
        categories_missing=pl.lit(None, pl.String))
    n, k = out["test_cases"].to_numpy(), out["test_passed"].to_numpy()
    has = n > 0
    low, high = np.full(len(n), np.nan), np.full(len(n), np.nan)
    if has.any():
        from statsmodels.stats.proportion import proportion_confint

        low[has], high[has] = proportion_confint(k[has], n[has], alpha=alpha, method="wilson")
    return out.with_columns(
        pass_rate=pl.when(pl.col("test_cases") > 0).then(pl.col("test_passed") / pl.col("test_cases")),
        pass_rate_ci_low=pl.Series(low).fill_nan(None), pass_rate_ci_high=pl.Series(high).fill_nan(None),
    )


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
