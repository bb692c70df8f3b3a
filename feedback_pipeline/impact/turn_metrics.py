"""The metrics every turn carries, and the judge's failure rate: one comparison row each.

Turn metrics (escalations, thumbs-down, rewrites, tool errors, latency, answer length,
refusals, disclaimers) are plain means over the side's turns, clustered by conversation;
the judge's failure rate is Hájek-weighted by 1/judge_selection_prob. Human-labeled rates
live in `label_metrics.py`; the arithmetic in `effects.py`.

A binary metric with fewer than MIN_EVENTS events over both sides keeps its row with null
statistics and a note, so the gap is visible.
"""

from collections.abc import Sequence

import polars as pl

from feedback_pipeline.impact.effects import compare_estimates, side_estimate

MIN_EVENTS = 10
STAT_KEYS = ("effect", "relative_effect", "ci_low", "ci_high", "p_value", "mde",
             "mean_before", "mean_after", "std_error")


def metric_row(metric: str, method: str, stats: dict | None = None, note: str | None = None) -> dict:
    """One comparison row: the statistics given (the rest null) and the notes joined."""
    row = {"metric": metric, "method": method, **dict.fromkeys(STAT_KEYS), "n_before": None, "n_after": None}
    row |= stats or {}
    row["notes"] = "; ".join(filter(None, [row.get("notes"), note])) or None
    return row


def cluster_key(frame: pl.DataFrame) -> pl.Expr:
    """The PSU of a turn: its conversation (its trace without one)."""
    column = "conversation_id" if "conversation_id" in frame.columns else "trace_id"
    return pl.col(column).hash().alias("_cluster")


def _turn_metrics(reasons: Sequence[str]) -> dict[str, tuple[pl.Expr, bool]]:
    """Turn-level metrics: name -> (value expression, is binary)."""
    esc = pl.col("escalated").fill_null(False)
    return {
        "escalation_rate": (esc, True),
        **{f"escalation_rate:{r}": (esc & (pl.col("escalation_reason") == r).fill_null(False), True)
           for r in reasons},
        "thumbs_down_rate": ((pl.col("thumbs") == "down").fill_null(False), True),  # per turn, not per rating
        "user_rewrote_rate": (pl.col("user_rewrote").fill_null(False), True),
        "tool_error_rate": (pl.col("tool_error_count").fill_null(0) > 0, True),
        "latency_ms": (pl.col("latency_ms"), False),
        "response_chars": (pl.col("response_chars"), False),
        "refusal_rate": (pl.col("is_refusal").fill_null(False), True),
        "disclaimer_rate": (pl.col("has_disclaimer").fill_null(False), True),
    }


def turn_rows(before: pl.DataFrame, after: pl.DataFrame, reasons: Sequence[str]) -> list[dict]:
    """One `mean` row per turn metric (a metric whose columns are missing says so)."""
    metrics = _turn_metrics(reasons)
    usable = {m: (e, b) for m, (e, b) in metrics.items() if set(e.meta.root_names()) <= set(before.columns)}
    sides = [f.select(cluster_key(f), *[e.cast(pl.Float64).alias(m) for m, (e, _) in usable.items()])
             for f in (before, after)]
    rows = []
    for metric, (_, binary) in metrics.items():
        if metric not in usable:
            rows.append(metric_row(metric, "mean", note="column missing from scores"))
            continue
        ests = []
        for side in sides:
            vals = side.select("_cluster", metric).drop_nulls()
            ests.append(side_estimate(vals[metric].to_numpy(), vals["_cluster"].to_numpy()))
        stats = compare_estimates(*ests)
        events = sum(e.mean * e.n for e in ests if e.n)
        if binary and events < MIN_EVENTS:
            stats = {k: stats[k] for k in ("n_before", "n_after", "mean_before", "mean_after")}
            rows.append(metric_row(metric, "mean", stats, f"too few events ({events:.0f} < {MIN_EVENTS})"))
        else:
            rows.append(metric_row(metric, "mean", stats))
    return rows


def judge_row(before: pl.DataFrame, after: pl.DataFrame) -> dict:
    """The judge's failure rate: `hajek` when the judge saw a sample, `mean` when it saw every turn."""
    if "judge_verdict" not in before.columns:
        return metric_row("judge_failure_rate", "mean", note="no judge columns in scores")
    prob = pl.col("judge_selection_prob") if "judge_selection_prob" in before.columns else pl.lit(1.0)
    sides = [f.filter(pl.col("judge_verdict").is_not_null()).select(
        cluster_key(f), y=(pl.col("judge_verdict") == "fail").cast(pl.Float64),
        w=1 / prob.fill_null(1.0).clip(lower_bound=1e-9)) for f in (before, after)]
    method = "hajek" if any((s["w"] != 1).any() for s in sides) else "mean"
    ests = [side_estimate(s["y"].to_numpy(), s["_cluster"].to_numpy(), s["w"].to_numpy()) for s in sides]
    stats = compare_estimates(*ests)
    if min(e.n for e in ests) == 0:
        return metric_row("judge_failure_rate", method, stats, "no judge verdicts on one side")
    return metric_row("judge_failure_rate", method, stats)
