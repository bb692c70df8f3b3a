"""The loop-health flags: pass rate stalled, eval set stalled, input drift, and their text.

Reads the joined vital signs (`loop_health.py`), one agent's weeks in order; the thresholds
come from `LoopHealthConfig`. Computing the signs lives in `loop_signals.py`.
"""

import polars as pl

FLAG_COLUMNS = ("pass_rate_stalled", "eval_set_stalled", "input_drift")


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


def flags(frame: pl.DataFrame, config) -> pl.DataFrame:
    """`frame` (sorted by agent and week) with pass_rate_high, weeks_since_improvement, the
    FLAG_COLUMNS and `flags` (their text); `config`: a `loop_health.LoopHealthConfig`."""
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
    ).with_columns(pass_rate_stalled=pl.when(pl.col("pass_rate_source") == "replay").then(
        (pl.col("pass_rate_mom_ci_low") <= config.min_improvement).fill_null(False)
    ).otherwise((pl.col("weeks_since_improvement") >= config.stall_weeks).fill_null(False)))
    text = pl.concat_str([
        pl.when(pl.col("pass_rate_stalled") & (pl.col("pass_rate_source") == "replay")).then(pl.format(
            "pass_rate_stalled: replay pass rate {} vs {} weeks ago: {} [{}, {}]", pl.col("pass_rate").round(3),
            pl.lit(config.month_weeks), pl.col("pass_rate_mom_change").round(3),
            pl.col("pass_rate_mom_ci_low").round(3), pl.col("pass_rate_mom_ci_high").round(3)))
        .when("pass_rate_stalled").then(pl.format(
            "pass_rate_stalled: not above {} for {} weeks", pl.col("pass_rate_high").round(3),
            "weeks_since_improvement")),
        pl.when("eval_set_stalled").then(pl.format(
            "eval_set_stalled: {} cases, was {}", size.fill_null(0), pl.col("_prev_size"))),
        pl.when("input_drift").then(pl.format(
            "input_drift: intent PSI {}, channel PSI {}", pl.col("intent_psi").round(3),
            pl.col("channel_psi").round(3))),
    ], separator="; ", ignore_nulls=True)
    return frame.with_columns(flags=text.replace("", None)).drop("_i", "_prev_size", "improved")
