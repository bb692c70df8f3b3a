"""Intervals for one binomial proportion, shared by the queue design (which predicts the
intervals) and the estimates (which report them): one definition, so the allocation
optimises the interval users get."""

import numpy as np


def jeffreys(p: np.ndarray, n_eff: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Jeffreys limits for proportions p on (possibly fractional, possibly infinite) sizes.

    Beta(x + ½, n − x + ½) quantiles (statsmodels' `proportion_confint(method="jeffreys")`
    computes the same through `scipy.stats.beta.ppf`; `betaincinv` directly is ~5× faster,
    which the allocation's thousands of cells need), with Brown, Cai & DasGupta's (2001)
    boundary rule: lower 0 at p = 0, upper 1 at p = 1.
    """
    p = np.clip(p, 0, 1)
    finite = np.isfinite(n_eff)
    n = np.where(finite, n_eff, 1.0)
    from scipy.special import betaincinv  # here: loading the definitions imports no heavy library

    a, b = p * n + 0.5, (1 - p) * n + 0.5
    lo, hi = betaincinv(a, b, alpha / 2), betaincinv(a, b, 1 - alpha / 2)
    lo, hi = np.where(p == 0, 0.0, lo), np.where(p == 1, 1.0, hi)
    return np.where(finite, lo, p), np.where(finite, hi, p)
