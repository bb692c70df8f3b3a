"""One side's design-based mean and the difference of two sides: effect, CI, p, MDE; BH.

The survey arithmetic under every impact figure, over NumPy arrays (no Polars, no
Dagster). Which rows form a side and which metrics a change gets live in `metrics.py`
and `compare.py`; the paired replay's McNemar test lives in `paired.py`.

**One side's mean** (`side_estimate`): the Hájek ratio ȳ = Σ w·y / Σ w over the
side's domain (w = 1 for turn metrics, 1/π for human labels, 1/judge_selection_prob
for the judge). Variance by Taylor linearization over clusters (PSUs: conversations;
turns of one conversation are correlated), within strata when the rows come from a
stratified sample, with replacement (no finite-population correction: a version's
effect is a statement about its traffic in general, not about these weeks' turns):
    z_i = w_i·d_i·(y_i − ȳ) / Σ w·d        (d_i = 1 in the side's domain, else 0)
    Z_g = Σ_{i∈g} z_i,   V = Σ_h m_h/(m_h − 1) · Σ_{g∈h} (Z_g − Z̄_h)²
m_h PSUs in stratum h (a lone PSU adds Z_g², conservatively). Unweighted with one
stratum this is the CR1 cluster-robust variance of a mean (statsmodels' OLS on a side
dummy with `cov_type="cluster"` agrees up to its small-sample factor, G/(G−1)·(N−1)/(N−2)
over both sides where this uses G_s/(G_s−1) per side); with one-turn clusters it is s²/n.
Human labels outside the side (the other arm, other weeks, other agents) enter as zeros,
as survey domain estimation requires; labels covering part of the queue get
w = 1/π · q_h/ℓ_h (q_h = `stratum_sample_size`).

**Difference** (`compare_estimates`): effect = ȳ_after − ȳ_before, SE = √(V_b + V_a)
(sides independent; a conversation on both sides would only make this conservative),
t reference with Welch–Satterthwaite df = (V_b+V_a)² / (V_b²/df_b + V_a²/df_a),
df_side = Σ_h (m_h − 1). 95 % CI = effect ± t_{.975,df}·SE; two-sided p.
relative_effect = effect / ȳ_before. MDE (80 % power, two-sided 5 %) at the observed
SE: (t_{.975,df} + t_{.80,df})·SE ≈ 2.80·SE.

**Across the metrics of a change**: Benjamini–Hochberg (`fdr_bh`) over the rows that
have a p-value.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class SideEstimate:
    """One side's (weighted) mean, its linearization variance, rows in the domain, PSUs, df."""

    mean: float
    variance: float
    n: int
    psus: int
    df: float


def _codes(values: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1].ravel()


def side_estimate(y, cluster=None, weight=None, stratum=None, domain=None) -> SideEstimate:
    """Hájek mean of y over the domain, with the stratified cluster linearization variance.

    All arguments are arrays of one length; `cluster` None makes every row its own PSU;
    rows outside `domain` count as zeros of their stratum (their y is ignored).
    """
    y = np.asarray(y, dtype=float)
    d = np.ones(len(y), bool) if domain is None else np.asarray(domain, bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    wd = np.where(d, w, 0.0)
    total, n = wd.sum(), int(d.sum())
    if n == 0 or total <= 0:
        return SideEstimate(float("nan"), float("nan"), 0, 0, 0.0)
    mean = float((wd * np.where(d, y, 0.0)).sum() / total)
    z = wd * (np.where(d, y, mean) - mean) / total
    s = np.zeros(len(y), np.int64) if stratum is None else _codes(stratum)
    c = np.arange(len(y)) if cluster is None else _codes(cluster)
    psu = _codes(s * (int(c.max()) + 1) + c)
    n_psu, n_strata = int(psu.max()) + 1, int(s.max()) + 1
    psu_stratum = np.empty(n_psu, np.int64)
    psu_stratum[psu] = s
    big_z = np.bincount(psu, z, n_psu)
    m = np.bincount(psu_stratum, minlength=n_strata)
    dev = big_z - (np.bincount(psu_stratum, big_z, n_strata) / np.maximum(m, 1))[psu_stratum]
    ss = np.bincount(psu_stratum, dev**2, n_strata)
    lonely = (m == 1)[psu_stratum]
    variance = float(np.sum(np.where(m > 1, m / np.maximum(m - 1, 1), 0.0) * ss) + np.sum(big_z[lonely] ** 2))
    in_domain = np.bincount(psu_stratum, np.bincount(psu, d, n_psu) > 0, n_strata) > 0
    df = float(max(np.sum(m[in_domain] - 1), 1))
    return SideEstimate(mean, variance, n, int(np.sum(np.bincount(psu, d, n_psu) > 0)), df)


def compare_estimates(before: SideEstimate, after: SideEstimate, alpha: float = ALPHA,
                      power: float = POWER) -> dict:
    """Effect (after − before), relative effect, t-based CI and p, MDE (see module docstring)."""
    out = {"n_before": before.n, "n_after": after.n, "mean_before": before.mean, "mean_after": after.mean}
    if before.n == 0 or after.n == 0:
        return out | dict.fromkeys(("effect", "relative_effect", "ci_low", "ci_high", "p_value", "mde",
                                    "std_error")) | {"notes": "no rows on one side"}
    effect = after.mean - before.mean
    relative = effect / before.mean if before.mean != 0 else None
    var = before.variance + after.variance
    if var <= 0:
        p = 1.0 if effect == 0 else 0.0
        return out | {"effect": effect, "relative_effect": relative, "ci_low": effect, "ci_high": effect,
                      "p_value": p, "mde": 0.0, "std_error": 0.0, "notes": "no variation within either side"}
    from scipy import stats as st

    df = var**2 / (before.variance**2 / before.df + after.variance**2 / after.df)
    se, q = np.sqrt(var), st.t.ppf(1 - alpha / 2, df)
    return out | {
        "effect": effect, "relative_effect": relative, "ci_low": effect - q * se, "ci_high": effect + q * se,
        "p_value": float(2 * st.t.sf(abs(effect) / se, df)), "mde": float((q + st.t.ppf(power, df)) * se),
        "std_error": float(se),
    }


def analytic_power(effect: float, se: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided z-test of a true `effect` whose estimate has standard error `se`."""
    from scipy import stats as st

    z = st.norm.ppf(1 - alpha / 2)
    return float(st.norm.cdf(effect / se - z) + st.norm.cdf(-effect / se - z))


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """BH-adjusted p-values (statsmodels `fdr_bh`); None/NaN entries stay None."""
    p = np.array([np.nan if v is None else v for v in p_values], dtype=float)
    out: list[float | None] = [None] * len(p)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok):
        from statsmodels.stats.multitest import multipletests

        for i, adj in zip(ok, multipletests(p[ok], alpha=ALPHA, method="fdr_bh")[1]):
            out[i] = float(adj)
    return out
