"""The paired comparison of the eval replay: the same cases under two versions (McNemar).

`paired_pass_rate` is the statistic; `replay_metric_rows` turns a replay's summary into the
`impact_metrics` rows (method `mcnemar`) of one change. Running the replay lives in
`replay.py`; unpaired comparisons in `effects.py`.
"""

from collections.abc import Mapping

import numpy as np
import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.impact.effects import ALPHA, POWER
from feedback_pipeline.impact.schemas import CHANGE_CONTEXT, ImpactMetrics

# impact_metrics rows of a replay: the metric and the `paired_summary` key it reads.
REPLAY_METRICS = (("eval_pass_rate", "overall"), ("eval_pass_rate:canary", "canary"))


def paired_pass_rate(before_pass, after_pass, alpha: float = ALPHA, power: float = POWER) -> dict:
    """Pass-rate difference of the same cases under two versions (eval replay).

    p: McNemar (statsmodels; exact binomial when fewer than 25 discordant pairs, else χ²
    with continuity correction). CI: Agresti–Min (2005) adjusted Wald for paired
    proportions (0.5 added to each cell), which keeps its coverage with few discordant
    pairs. MDE: (z_{1−α/2} + z_power)·SE with SE = √((n01 + n10)/n − effect²)/√n.
    """
    from scipy import stats as st
    from statsmodels.stats.contingency_tables import mcnemar

    b, a = np.asarray(before_pass, bool), np.asarray(after_pass, bool)
    if b.shape != a.shape or b.ndim != 1 or len(b) == 0:
        raise ValueError("before_pass and after_pass must be equal-length, non-empty 1-d arrays")
    n = len(b)
    fixed, broke = int(np.sum(~b & a)), int(np.sum(b & ~a))
    table = [[int(np.sum(b & a)), broke], [fixed, int(np.sum(~b & ~a))]]
    p = float(mcnemar(table, exact=fixed + broke < 25, correction=True).pvalue)
    effect = (fixed - broke) / n
    f2, b2, n2 = fixed + 0.5, broke + 0.5, n + 2
    centre = (f2 - b2) / n2
    half = st.norm.ppf(1 - alpha / 2) * np.sqrt(max((f2 + b2) - (f2 - b2) ** 2 / n2, 0.0)) / n2
    se = np.sqrt(max((fixed + broke) / n - effect**2, 0.0) / n)
    mean_before = float(b.mean())
    return {
        "metric": "eval_pass_rate", "method": "mcnemar", "effect": effect,
        "relative_effect": effect / mean_before if mean_before else None,
        "ci_low": max(centre - half, -1.0), "ci_high": min(centre + half, 1.0), "p_value": p,
        "n_before": n, "n_after": n, "mde": float((st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)) * se),
        "mean_before": mean_before, "mean_after": float(a.mean()), "std_error": float(se),
        "notes": f"{fixed} fixed, {broke} broken of {n} paired cases",
    }


def replay_metric_rows(change: Mapping, summary: Mapping) -> pl.DataFrame:
    """The `impact_metrics` rows of one change's paired replay (`replay.paired_summary`):
    `eval_pass_rate` over all replayed cases and `eval_pass_rate:canary`, method `mcnemar`;
    a subset without complete pairs keeps its row with null statistics."""
    schema = polars_schema(ImpactMetrics)
    rows = []
    for metric, key in REPLAY_METRICS:
        result = summary.get(key) or {}
        rows.append({**{c: change[c] for c in CHANGE_CONTEXT},
                     **{k: v for k, v in result.items() if k in schema},
                     "metric": metric, "method": "mcnemar", "proxy_gaming": False,
                     "notes": f"paired replay of {summary['n_complete']} cases"})
    return pl.DataFrame(rows).cast({k: v for k, v in schema.items() if k in rows[0]}, strict=False)
