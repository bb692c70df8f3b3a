"""The proxy-gaming flag: a change that seems to improve quality while the answers' shape worsens.

Quality *seems* to improve when a PROXY_QUALITY_METRICS estimate drops by at least
PROXY_MIN_IMPROVEMENT relative (no significance needed: the flag warns about what a reader
of the dashboard would believe) while the shape evidence is significant (BH-adjusted
p < PROXY_ALPHA): answers much shorter (response_chars relative effect ≤ −PROXY_LENGTH_DROP)
or refusals / disclaimers up (relative effect ≥ PROXY_SHAPE_RISE, or up from 0).
Reads one change's comparison rows (after BH); computes no statistics of its own.
"""

import polars as pl

PROXY_ALPHA = 0.05
PROXY_QUALITY_METRICS = ("thumbs_down_rate", "judge_failure_rate", "escalation_rate")
PROXY_MIN_IMPROVEMENT = 0.10
PROXY_LENGTH_DROP = 0.25
PROXY_SHAPE_METRICS = ("refusal_rate", "disclaimer_rate")
PROXY_SHAPE_RISE = 0.25


def proxy_gaming(rows: pl.DataFrame) -> tuple[bool, str | None]:
    """(flag, reason) for one change's rows (after BH; the rule is at the PROXY_* constants)."""
    automated = rows.filter(~pl.col("metric").str.starts_with("failure_rate"))  # one row per metric
    by_metric = {r["metric"]: r for r in automated.iter_rows(named=True)}
    better = [f"{m} {r['relative_effect']:+.0%}" for m in PROXY_QUALITY_METRICS
              if (r := by_metric.get(m)) and (r["relative_effect"] or 0) <= -PROXY_MIN_IMPROVEMENT]

    def significant(metric: str) -> dict | None:
        r = by_metric.get(metric)
        return r if r and r["p_adjusted"] is not None and r["p_adjusted"] < PROXY_ALPHA else None

    worse = []
    if (r := significant("response_chars")) and (r["relative_effect"] or 0) <= -PROXY_LENGTH_DROP:
        worse.append(f"response_chars {r['relative_effect']:+.0%}")
    for m in PROXY_SHAPE_METRICS:
        r = significant(m)
        if r and r["effect"] > 0 and (r["relative_effect"] is None or r["relative_effect"] >= PROXY_SHAPE_RISE):
            worse.append(f"{m} {r['mean_before']:.1%} -> {r['mean_after']:.1%}")
    if better and worse:
        return True, f"seems better ({', '.join(better)}) while {', '.join(worse)}"
    return False, None
