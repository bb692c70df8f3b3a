"""Hájek and Horvitz–Thompson rows for one metric, from its stratum statistics (`stratum_stats`).

PPI, which also uses the judge, is `ppi`; the interval arithmetic is `intervals`.
"""

import numpy as np

from feedback_pipeline.estimates.intervals import linearization_se, mover_row, null_row
from feedback_pipeline.estimates.ppi import ppi_row


def design_rows(a: dict[str, np.ndarray], alpha: float) -> list[dict]:
    """hajek, horvitz_thompson and ppi rows for one metric from its stratum statistics."""
    weight, ell, big_n = a["weight"], a["ell"], a["big_n"]
    ybar, fbar = a["swy"] / a["sw"], a["swf"] / a["sw"]
    kish = a["sw"] ** 2 / a["sw2"]
    fpc = np.where(ell >= big_n, 0.0, 1 - ell / big_n)
    n_eff = np.where(ell >= big_n, np.inf, kish * (big_n - 1) / np.maximum(big_n - ell, 1e-12))
    # Linearization pieces: Σ w̃²(y−ȳ)² etc., w̃ = w/Σw; ℓ/(ℓ−1) makes them unbiased.
    scale = np.where(ell > 1, ell / np.maximum(ell - 1, 1), np.nan) / a["sw"] ** 2
    var_y = scale * (a["sw2y"] - 2 * ybar * a["sw2y"] + ybar**2 * a["sw2"])
    var_f = scale * (a["sw2f2"] - 2 * fbar * a["sw2f"] + fbar**2 * a["sw2"])
    cov = scale * (a["sw2yf"] - fbar * a["sw2y"] - ybar * a["sw2f"] + ybar * fbar * a["sw2"])
    hajek = float(weight @ ybar)
    ht_means = a["ht"] / a["n_orig"]
    ht = float(weight @ ht_means)
    with np.errstate(divide="ignore", invalid="ignore"):  # HT: variance of the stratum total Σ z, z = w·y
        var_ht = (ell / (ell - 1)) * (a["ht2"] - a["ht"] ** 2 / ell) / a["n_orig"] ** 2
    rows = [
        mover_row("hajek", hajek, weight, ybar, n_eff, alpha, linearization_se(weight, fpc, var_y, ybar, hajek, ell)),
        mover_row("horvitz_thompson", ht, weight, np.clip(ht_means, 0, 1), n_eff, alpha,
                   linearization_se(weight, fpc, var_ht, ht_means, ht, ell)),
    ]
    if not a["has_judge"]:
        rows.append(null_row("no judge verdicts in this agent-week") | {"method": "ppi"})
    else:
        rows.append(ppi_row(a, weight, ybar, fbar, var_y, var_f, cov, fpc, n_eff, kish, alpha))
    return rows
