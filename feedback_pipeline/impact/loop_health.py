"""Loop health: is the feedback loop working, week over week per agent, with warning flags.

Pure functions over Polars frames (no Dagster, no connections): the `loop_health` asset
loads the inputs below, calls `loop_health`, and turns the flag columns into a WARN check.

Inputs (the loader computes them; every frame may be empty, `estimates`, `labels` and
`calibration` may be None):
- `scores_weekly_mix`: week (date), agent_id, intent, channel, n_traces, n_rated — from
  `SELECT week, agent_id, intent, channel, count(*) AS n_traces, count(thumbs) AS n_rated
   FROM automated_scores GROUP BY ALL`.
- `estimates`: `quality_estimates` rows (week, agent_id, metric, method, estimate, ci_low, ci_high).
- `snapshots`: `eval_set_snapshots` rows (agent_id, week, split, verdict, failure_category).
- `labels`: one row per imported label: agent_id and imported_at (timestamp) or week —
  `human_labels` joined to `automated_scores` on trace_id for the agent.
- `calibration`: `judge_calibration` rows (month "YYYY-MM", cohens_kappa, n_compared optional).

Definitions (LoopHealthConfig holds the numbers):
- `pass_rate`: verdict "pass" share of the `test` split of the week's snapshot (the human
  gold labels), Wilson 95 % CI (statsmodels).
- **Improved** in a week: its pass rate beats `pass_rate_high` (the pass rate of the last
  improved week) by more than `min_improvement`; the first week with a pass rate counts as
  improved. With min_improvement = 0 that is a new all-time high. Not CI-based: a grow-only
  set shares most cases week to week, so weekly CIs are not independent and overlap nearly
  always. `pass_rate_stalled`: `stall_weeks` or more weeks since the last improved week
  (weeks without a snapshot count as not improved).
- `eval_set_stalled`: an earlier snapshot exists and this week's set is not larger than the
  last one before it (no snapshot this week: stalled), unless that one had reached `max_cases`.
- `input_drift`: `population_stability_index` of the intent mix, or of the channel mix,
  against the previous calendar week's > `psi_threshold` (null PSI without traffic on a side).
- `category_coverage`: categories with ≥ 1 case in the snapshot (both splits) / `categories`.
- `labels_imported`: labels imported in the week (Monday-based); `judge_kappa`: the κ of the
  week's month (Monday's month), n_compared-weighted over rubric versions.
Rows: every calendar week from an agent's first to last week in scores or snapshots.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from statsmodels.stats.proportion import proportion_confint

from feedback_pipeline.impact.stats import PSI_LARGE, population_stability_index
from feedback_pipeline.estimates.estimators import FAILURE_CATEGORIES

FLAG_COLUMNS = ("pass_rate_stalled", "eval_set_stalled", "input_drift")
LOOP_HEALTH_SCHEMA: dict[str, pl.DataType] = {
    "agent_id": pl.String, "week": pl.Date,
    "n_traces": pl.Int64, "share_rated": pl.Float64, "intent_psi": pl.Float64, "channel_psi": pl.Float64,
    "eval_set_size": pl.Int64, "test_cases": pl.Int64, "test_passed": pl.Int64,
    "pass_rate": pl.Float64, "pass_rate_ci_low": pl.Float64, "pass_rate_ci_high": pl.Float64,
    "pass_rate_high": pl.Float64, "weeks_since_improvement": pl.Int64,
    "category_coverage": pl.Float64, "categories_missing": pl.String,
    "labels_imported": pl.Int64, "judge_kappa": pl.Float64,
    "failure_rate": pl.Float64, "failure_rate_ci_low": pl.Float64, "failure_rate_ci_high": pl.Float64,
    **{f: pl.Boolean for f in FLAG_COLUMNS}, "flags": pl.String,
}
_KEYS = ("agent_id", "week")


@dataclass(frozen=True)
class LoopHealthConfig:
    stall_weeks: int = 4
    min_improvement: float = 0.0  # a new high must beat the old one by more than this
    psi_threshold: float = PSI_LARGE
    max_cases: int | None = None  # EvalSetConfig.max_cases: a full set is not "stalled"
    categories: Sequence[str] = FAILURE_CATEGORIES
    estimate_method: str = "hajek"  # quality_estimates method shown as failure_rate
    alpha: float = 0.05


def _traffic(mix: pl.DataFrame) -> pl.DataFrame:
    return mix.group_by(*_KEYS).agg(n_traces=pl.col("n_traces").sum().cast(pl.Int64),
                                    n_rated=pl.col("n_rated").sum().cast(pl.Int64))


def _psi(mix: pl.DataFrame, column: str) -> pl.DataFrame:
    """agent_id, week, <column>_psi against the agent's previous calendar week."""
    counts = (mix.with_columns(pl.col(column).cast(pl.String).fill_null("(null)"))
              .group_by(*_KEYS, column).agg(pl.col("n_traces").sum()))
    by_week = {key: dict(zip(g[column], g["n_traces"])) for key, g in counts.group_by(*_KEYS)}
    rows = []
    for (agent, week), actual in by_week.items():
        expected = by_week.get((agent, week - timedelta(days=7)))
        ok = expected and sum(expected.values()) > 0 and sum(actual.values()) > 0
        rows.append((agent, week, population_stability_index(expected, actual) if ok else None))
    return pl.DataFrame(rows, schema={"agent_id": pl.String, "week": pl.Date, f"{column}_psi": pl.Float64},
                        orient="row")


def _snapshot_stats(snapshots: pl.DataFrame, config: LoopHealthConfig) -> pl.DataFrame:
    categories = list(config.categories)
    test = pl.col("split") == "test"
    out = snapshots.group_by(*_KEYS).agg(
        eval_set_size=pl.len().cast(pl.Int64),
        test_cases=test.sum().cast(pl.Int64),
        test_passed=(test & (pl.col("verdict") == "pass")).sum().cast(pl.Int64),
        _seen=pl.col("failure_category").filter(pl.col("failure_category").is_in(categories)).unique(),
    ).with_columns(
        category_coverage=pl.col("_seen").list.len() / max(len(categories), 1),
        categories_missing=pl.lit(categories, dtype=pl.List(pl.String))
        .list.set_difference("_seen").list.sort().list.join(", ").replace("", None),
    ).drop("_seen") if snapshots.height else snapshots.group_by(*_KEYS).agg(
        # No snapshot yet: polars cannot broadcast the category list over zero groups.
        eval_set_size=pl.len().cast(pl.Int64), test_cases=pl.len().cast(pl.Int64),
        test_passed=pl.len().cast(pl.Int64), category_coverage=pl.lit(0.0),
        categories_missing=pl.lit(None, pl.String))
    n, k = out["test_cases"].to_numpy(), out["test_passed"].to_numpy()
    has = n > 0
    low, high = np.full(len(n), np.nan), np.full(len(n), np.nan)
    if has.any():
        low[has], high[has] = proportion_confint(k[has], n[has], alpha=config.alpha, method="wilson")
    return out.with_columns(
        pass_rate=pl.when(pl.col("test_cases") > 0).then(pl.col("test_passed") / pl.col("test_cases")),
        pass_rate_ci_low=pl.Series(low).fill_nan(None), pass_rate_ci_high=pl.Series(high).fill_nan(None),
    )


def _label_counts(labels: pl.DataFrame | None) -> pl.DataFrame | None:
    if labels is None:
        return None
    if "week" not in labels.columns:
        stamp = pl.col("imported_at")
        if isinstance(labels.schema["imported_at"], pl.Datetime) and labels.schema["imported_at"].time_zone:
            stamp = stamp.dt.convert_time_zone("UTC")
        labels = labels.with_columns(week=stamp.dt.truncate("1w").cast(pl.Date))
    return (labels.filter(pl.col("agent_id").is_not_null())
            .group_by(*_KEYS).agg(labels_imported=pl.len().cast(pl.Int64)))


def _monthly_kappa(calibration: pl.DataFrame | None) -> pl.DataFrame | None:
    if calibration is None:
        return None
    weight = pl.col("n_compared").cast(pl.Float64) if "n_compared" in calibration.columns else pl.lit(1.0)
    return (calibration.filter(pl.col("cohens_kappa").is_not_null()).with_columns(_w=weight)
            .group_by("month").agg(judge_kappa=(pl.col("cohens_kappa") * pl.col("_w")).sum() / pl.col("_w").sum()))


def _failure_rates(estimates: pl.DataFrame | None, method: str) -> pl.DataFrame | None:
    if estimates is None:
        return None
    return estimates.filter((pl.col("metric") == "failure_rate") & (pl.col("method") == method)).select(
        *_KEYS, failure_rate="estimate", failure_rate_ci_low="ci_low", failure_rate_ci_high="ci_high")


def _grid(*frames: pl.DataFrame) -> pl.DataFrame:
    """Every calendar week (Monday steps) from each agent's first to its last week."""
    weeks = pl.concat([f.select(pl.col("agent_id").cast(pl.String), pl.col("week").cast(pl.Date))
                       for f in frames])
    spans = weeks.group_by("agent_id").agg(first=pl.col("week").min(), last=pl.col("week").max())
    return (spans.select("agent_id", week=pl.date_ranges("first", "last", interval="1w"))
            .explode("week").sort(*_KEYS))


def _improvements(rates: pl.Series, min_improvement: float) -> pl.Series:
    """Per week of one agent: {pass_rate_high, improved}; sequential, the high moves on improvement."""
    high, highs, improved = None, [], []
    for rate in rates:
        highs.append(high)
        up = rate is not None and (high is None or rate > high + min_improvement + 1e-12)
        improved.append(up)
        high = rate if up else high
    return pl.Series([{"pass_rate_high": h, "improved": u} for h, u in zip(highs, improved)],
                     dtype=pl.Struct({"pass_rate_high": pl.Float64, "improved": pl.Boolean}))


def _flags(frame: pl.DataFrame, config: LoopHealthConfig) -> pl.DataFrame:
    agent = "agent_id"
    parts = frame.drop("pass_rate_high").partition_by(agent, maintain_order=True)  # sorted by week within
    frame = pl.concat([p.with_columns(_up=_improvements(p["pass_rate"], config.min_improvement)) for p in parts])
    frame = frame.unnest("_up").with_columns(_i=pl.int_range(pl.len()).over(agent))
    since = pl.col("_i") - pl.when("improved").then(pl.col("_i")).forward_fill().over(agent)
    size, prev_size = pl.col("eval_set_size"), pl.col("eval_set_size").forward_fill().shift(1).over(agent)
    full = prev_size >= config.max_cases if config.max_cases is not None else pl.lit(False)
    frame = frame.with_columns(
        weeks_since_improvement=since.cast(pl.Int64), _prev_size=prev_size,
        eval_set_stalled=(prev_size.is_not_null() & (size.is_null() | (size <= prev_size)) & ~full)
        .fill_null(False),
        input_drift=((pl.col("intent_psi") > config.psi_threshold).fill_null(False)
                     | (pl.col("channel_psi") > config.psi_threshold).fill_null(False)),
    ).with_columns(pass_rate_stalled=(pl.col("weeks_since_improvement") >= config.stall_weeks).fill_null(False))
    text = pl.concat_str([
        pl.when("pass_rate_stalled").then(pl.format(
            "pass_rate_stalled: not above {} for {} weeks", pl.col("pass_rate_high").round(3),
            "weeks_since_improvement")),
        pl.when("eval_set_stalled").then(pl.format(
            "eval_set_stalled: {} cases, was {}", size.fill_null(0), pl.col("_prev_size"))),
        pl.when("input_drift").then(pl.format(
            "input_drift: intent PSI {}, channel PSI {}", pl.col("intent_psi").round(3),
            pl.col("channel_psi").round(3))),
    ], separator="; ", ignore_nulls=True)
    return frame.with_columns(flags=text.replace("", None)).drop("_i", "_prev_size", "improved")


def loop_health(scores_weekly_mix: pl.DataFrame, estimates: pl.DataFrame | None, snapshots: pl.DataFrame,
                labels: pl.DataFrame | None, calibration: pl.DataFrame | None,
                config: LoopHealthConfig = LoopHealthConfig()) -> pl.DataFrame:
    """One row per agent and calendar week (LOOP_HEALTH_SCHEMA): the loop's vital signs and flags."""
    mix = scores_weekly_mix.with_columns(pl.col("week").cast(pl.Date), pl.col("agent_id").cast(pl.String))
    snapshots = snapshots.with_columns(pl.col("week").cast(pl.Date), pl.col("agent_id").cast(pl.String))
    grid = _grid(mix, snapshots)
    if grid.is_empty():
        return pl.DataFrame(schema=LOOP_HEALTH_SCHEMA)
    traffic = _traffic(mix).with_columns(
        share_rated=pl.when(pl.col("n_traces") > 0).then(pl.col("n_rated") / pl.col("n_traces")))
    out = grid
    for part in (traffic.drop("n_rated"), _psi(mix, "intent"), _psi(mix, "channel"),
                 _snapshot_stats(snapshots, config), _label_counts(labels),
                 _failure_rates(estimates, config.estimate_method)):
        if part is not None:
            out = out.join(part.with_columns(pl.col("week").cast(pl.Date)), on=list(_KEYS), how="left")
    kappa = _monthly_kappa(calibration)
    out = out.with_columns(month=pl.col("week").dt.strftime("%Y-%m"))
    if kappa is not None:
        out = out.join(kappa, on="month", how="left")
    out = out.with_columns(
        *[pl.lit(None, dtype).alias(c) for c, dtype in LOOP_HEALTH_SCHEMA.items() if c not in out.columns],
    ).with_columns(pl.col("n_traces", "labels_imported").fill_null(0))
    out = _flags(out.sort(*_KEYS), config)
    return out.select([pl.col(c).cast(t) for c, t in LOOP_HEALTH_SCHEMA.items()])
