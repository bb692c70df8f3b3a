"""The held-out pass rate's statistics: a week's rate with its 95 % CI, and a month-over-month change.

Cases of one conversation are not independent (they share the user, the topic and the
agent's earlier turns), so both intervals are clustered by conversation:
- `pass_rate_ci`: Wilson interval (statsmodels) on the effective sample size n / deff, where
  the design effect deff = cluster-robust variance of the mean (statsmodels OLS on a constant,
  `cov_type="cluster"`) / the binomial variance p(1 − p)/n, never below 1. With one case per
  conversation it is the plain Wilson interval.
- `pass_rate_change`: (rate now) − (rate a month ago) by OLS of pass on a "now" indicator with
  conversation clusters, so cases present in both snapshots (the set grows, cases persist) are
  treated as the paired observations they are; normal 95 % CI on the cluster-robust SE.
Pure numpy/statsmodels on arrays; no Polars, no tables (`loop_signals.py` applies them).
"""

from collections.abc import Sequence

import numpy as np

ALPHA = 0.05


def _codes(clusters: Sequence | None, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return codes


def pass_rate_ci(passed: Sequence[bool], clusters: Sequence | None = None,
                 alpha: float = ALPHA) -> tuple[float | None, float | None, float | None]:
    """(pass rate, CI low, CI high) of the cases, clustered by `clusters` (None: independent)."""
    from statsmodels.stats.proportion import proportion_confint

    y = np.asarray(passed, dtype=float)
    n = len(y)
    if n == 0:
        return None, None, None
    p, codes = float(y.mean()), _codes(clusters, n)
    deff = 1.0
    if 0 < p < 1 and len(np.unique(codes)) < n:
        import statsmodels.api as sm

        fit = sm.OLS(y, np.ones(n)).fit(cov_type="cluster", cov_kwds={"groups": codes})
        deff = max(1.0, float(fit.bse[0]) ** 2 / (p * (1 - p) / n))
    n_eff = n / deff
    low, high = proportion_confint(p * n_eff, n_eff, alpha=alpha, method="wilson")
    return p, float(low), float(high)


def pass_rate_change(now: Sequence[bool], now_clusters: Sequence | None, before: Sequence[bool],
                     before_clusters: Sequence | None, alpha: float = ALPHA) -> tuple[float | None, ...]:
    """(change, CI low, CI high) of the pass rate from `before` to `now`; cluster ids shared by
    both sides (the same conversation's cases, in both snapshots) are one cluster."""
    import statsmodels.api as sm
    from scipy import stats as st

    y_now, y_before = np.asarray(now, dtype=float), np.asarray(before, dtype=float)
    if len(y_now) == 0 or len(y_before) == 0:
        return None, None, None
    effect = float(y_now.mean() - y_before.mean())
    y = np.concatenate([y_before, y_now])
    x = np.column_stack([np.ones(len(y)), np.r_[np.zeros(len(y_before)), np.ones(len(y_now))]])
    if now_clusters is None or before_clusters is None:
        groups = np.arange(len(y))
    else:
        groups = _codes([*before_clusters, *now_clusters], len(y))
    if np.var(y) == 0:
        return effect, effect, effect  # every case passed (or failed) on both sides
    fit = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": groups})
    half = float(st.norm.ppf(1 - alpha / 2) * fit.bse[1])
    return effect, max(effect - half, -1.0), min(effect + half, 1.0)
