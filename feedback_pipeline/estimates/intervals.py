"""Interval and row helpers shared by every method: Jeffreys limits, stratified MOVER, Wilson rows.

Intervals (95 %): stratified MOVER, "method of variance estimates recovery" (Zou &
Donner 2008; for sums of binomial proportions Zou, Huang & Zhang 2009): per stratum,
a Jeffreys interval for ȳ_h (`proportions.jeffreys`; recommended with Wilson for small n by
Brown, Cai & DasGupta 2001, with their boundary rule) on the effective size
ℓ*_h = Kish(w)·(N_h−1)/(N_h−ℓ_h) (Kish's n for unequal weights, with the
finite-population correction: a fully labeled stratum is known exactly); then
L = θ̂ − sqrt(Σ W_h²(ȳ_h − l_h)²), U = θ̂ + sqrt(Σ W_h²(u_h − ȳ_h)²).
Why not Wald, or Wilson/Korn–Graubard on one effective n for the whole estimate: a
rare category usually has zero hits in the big, lightly sampled `unrated` stratum,
where the linearization variance is then 0 and both collapse around the oversampled
strata (in benchmarks/coverage.py Wald covers 58 % on policy_violation, 83–88 % on
the other rare categories; Korn–Graubard-style Wilson on p̂(1−p̂)/V̂ 75 %); Kish's n
from weights alone ignores the gain of stratification and over-covers common rates.
Per-stratum intervals keep an honest upper margin for "0 of ℓ_h" and tend to the
stratified Wald interval when counts are large. (Per-stratum Wilson also covers,
but is 10–30 % wider.)
`std_error` is the stratified linearization SE (with-replacement within stratum,
times the finite-population correction 1 − ℓ_h/N_h), for readers who need one.

Which estimate an interval goes around is `design_based` / `ppi`.
"""

import numpy as np
import polars as pl

from feedback_pipeline.proportions import jeffreys


def linearization_se(weight, fpc, var_h, mean_h, overall, ell) -> float:
    """The stratified linearization SE: sqrt(Σ W_h² (1 − ℓ_h/N_h) V̂_h)."""
    lonely = (mean_h - overall) ** 2  # R survey's "adjust" for a stratum with one label
    with np.errstate(invalid="ignore"):
        v = np.where(ell > 1, var_h, lonely)
    # A stratum whose labels are all equal can give −1e-17 (Σz² − (Σz)²/ℓ): that is 0, not NaN.
    return float(np.sqrt(max(np.sum(weight**2 * fpc * np.nan_to_num(v)), 0.0)))


def mover_row(method, estimate, weight, means, n_eff, alpha, se) -> dict:
    """Stratified MOVER: per-stratum Jeffreys margins added in quadrature (strata independent)."""
    lo, hi = jeffreys(means, n_eff, alpha)
    low = estimate - np.sqrt(np.sum(weight**2 * (means - lo) ** 2))
    high = estimate + np.sqrt(np.sum(weight**2 * (hi - means) ** 2))
    return estimate_row(method, estimate, low, high, se)


def estimate_row(method: str, estimate: float, low: float, high: float, se: float) -> dict:
    """Clip to [0, 1] keeping ci_low ≤ estimate ≤ ci_high (PPI and HT can leave [0, 1])."""
    clipped = min(max(estimate, 0.0), 1.0)
    note = f"estimate {estimate:.4f} clipped to [0, 1]" if clipped != estimate else None
    return {
        "method": method, "estimate": clipped, "ci_low": min(max(low, 0.0), clipped),
        "ci_high": max(min(high, 1.0), clipped), "std_error": se, "notes": note,
    }


def null_row(note: str) -> dict:
    return {"estimate": None, "ci_low": None, "ci_high": None, "std_error": None, "notes": note}


def wilson_row(method: str, k: float, n: int, alpha: float) -> dict:
    """k of n with a Wilson interval and the binomial SE (the naive, unweighted rates)."""
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return estimate_row(method, k / n, lo, hi, float(np.sqrt(k / n * (1 - k / n) / n)))


def naive_sample_row(y: np.ndarray, alpha: float) -> dict:
    return wilson_row("naive_sample", float(np.sum(y)), len(y), alpha)


def thumbs_row(pop: pl.DataFrame, alpha: float) -> dict:
    rated = pop.filter(pl.col("thumbs").is_in(["up", "down"]))
    if rated.height == 0:
        return {"method": "naive_thumbs"} | null_row("no rated traces")
    k, n = int((rated["thumbs"] == "down").sum()), rated.height
    row = wilson_row("naive_thumbs", k, n, alpha)
    row["notes"] = f"{n} rated traces"
    return row
