"""The heavy-clicker cap's exact factor e_i = P(a drawn trace is kept | drawn).

A user with K_u > `user_cap` draws in the agent-week keeps `user_cap` of them, at
random; null user_id is never capped. Given trace i is drawn, K_u − 1 is a sum of
independent hypergeometric counts (the user's other traces in each stratum), whose
distribution we convolve: e_i = E[min(1, cap / K_u) | i drawn]. The draws that
apply the cap live in `design`; this module only computes e.
"""

import functools
from collections.abc import Mapping

import numpy as np
import polars as pl


def user_cap_probs(frame: pl.DataFrame, draws: Mapping[str, int], cap: int) -> pl.DataFrame:
    """e = P(kept | drawn) per (user, stratum), for users who could be drawn > cap times.

    `frame`: the agent-week's traces with `user_id`, `stratum`, `stratum_population`.
    Given a trace of stratum h is drawn, the user's other draws are independent
    hypergeometric counts: Hyp(N_h−1, m_uh−1, n_h−1) in h, Hyp(N_g, m_ug, n_g) in
    each other stratum g. K = 1 + their sum; the cap keeps it with prob min(1, cap/K).
    """
    counts = frame.filter(pl.col("user_id").is_not_null()).group_by("user_id", "stratum").agg(
        m=pl.len(), big_n=pl.col("stratum_population").first()
    )
    n_h = pl.col("stratum").replace_strict(draws, return_dtype=pl.Int64)
    most = pl.min_horizontal("m", n_h)
    # Users who could be drawn more than `cap` times but almost surely are not: their
    # draws K are a sum of independent hypergeometrics with mean lam = sum m_h n_h / N_h,
    # and Chernoff (which holds for hypergeometric sums, Hoeffding 1963) gives
    # P(K >= cap) <= exp(-lam) (e lam / cap)^cap. Below 1e-12 their e is 1 to that
    # precision; this spares the convolution for the many ordinary users of a big week.
    lam = (pl.col("m") * n_h / pl.col("big_n")).sum().over("user_id")
    log_bound = pl.when(lam < cap).then(-lam + cap * (1 + lam.log() - np.log(cap))).otherwise(0.0)
    heavy = counts.filter((most.sum().over("user_id") > cap) & (log_bound > np.log(1e-12))
                          ).sort("user_id", "stratum")  # else K ≤ cap surely, or e = 1 to 1e-12
    rows = []  # a loop per heavy user (few), each a handful of small convolutions
    for (user_id,), group in heavy.group_by("user_id", maintain_order=True):
        cells = list(group.select("stratum", "m", "big_n").iter_rows())
        full = {h: _hypergeom_pmf(int(big_n), int(m), draws[h]) for h, m, big_n in cells}
        for h, m, big_n in cells:
            pmf = _hypergeom_pmf(int(big_n) - 1, int(m) - 1, draws[h] - 1)
            for g, other in full.items():
                if g != h:
                    pmf = np.convolve(pmf, other)
            k = 1 + np.arange(len(pmf))
            # Clipped: the convolved PMF can sum to 1 + 1e-11 in floating point.
            rows.append((user_id, h, min(1.0, float(pmf @ np.minimum(1.0, cap / k)))))
    schema = {"user_id": frame.schema["user_id"], "stratum": pl.String, "user_cap_prob": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


@functools.lru_cache(maxsize=4096)
def _hypergeom_pmf(population: int, successes: int, draws: int) -> np.ndarray:
    """P(X = 0..successes) drawing `draws` from `population` holding `successes`."""
    if successes <= 0 or draws <= 0:
        pmf = np.ones(1)
    else:
        from scipy.stats import hypergeom

        pmf = hypergeom.pmf(np.arange(successes + 1), population, successes, draws)
    pmf.setflags(write=False)  # shared through the cache
    return pmf
