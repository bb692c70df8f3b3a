"""The `optimal` allocation policy: labels where they narrow the reported intervals most,
over the failure rate and every category rate, from stratum rates shrunk toward a prior.

The objective is the width of the intervals the estimator will report, not a variance:
per stratum a Jeffreys interval on Kish's n, combined by MOVER (`estimates.intervals`).
For large counts that is the stratified variance Σ_h W_h² S_h²/n_h and the optimum is
Neyman's; for the counts a queue has it is not: a stratum with 0 of ℓ failures (or ℓ
of ℓ) still has a margin of ~2.5/ℓ, which the variance says is 0. Allocating on the
variance (this module until 5 Dec 2026) left a realized interval 1 % wider than a
proportional sample's in `noisy_feedback` without a judge; on the predicted width it
does not (docs/statistics.md). Objective: Σ_m a_m·width_m / width_m(proportional),
the failure rate, the figure a team reads first, weighing three times as much as all
categories together (a = 3K for it, 1 for each of the K categories); labels are added
one at a time where they lower it most, on top of the uniform slice. Then the sizes are
moved toward proportional until no metric's predicted width is above a proportional
sample's (`never_worse_than_proportional`): no metric pays for the others.

Where the rates come from: a prior per stratum kind (escalations are almost all
failures: little to learn there, which is why they get few labels; `unrated` holds
most of the uncertainty), shrunk toward last weeks' labeled rates when there are
any (`PRIOR_LABELS` pseudo-labels against ℓ real ones). An escalation reason that
names a category makes that category most of the stratum's failures.

Only the sizes live here; the draws and their exact π are `design`'s.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from feedback_pipeline.proportions import jeffreys

# Prior failure rate per stratum kind; `escalated` with a reason that names no category
# (user_requested_human, other, unspecified) gets ESCALATED_UNMATCHED.
KIND_FAILURE_PRIOR: Mapping[str, float] = {
    "escalated": 0.9, "thumbs_down": 0.5, "low_score": 0.5,
    "user_rewrote": 0.2, "thumbs_up": 0.05, "unrated": 0.06,
}
ESCALATED_UNMATCHED = 0.5
REASON_MATCH_SHARE = 0.8  # share of an escalation's failures in the category its reason names
PRIOR_LABELS = 20.0  # pseudo-labels behind the kind prior when last weeks' labels are used
# The failure rate's weight in the objective, in units of all categories together (each
# category keeps the guard: never wider than proportional).
FAILURE_RATE_WEIGHT = 3.0


def stratum_category(stratum: str, categories: Sequence[str]) -> str | None:
    """The category an `escalated:<reason>` stratum names (`agent_could_not_answer` names
    `could_not_answer`), or None."""
    kind, _, reason = stratum.partition(":")
    if kind != "escalated":
        return None
    for name in (reason, reason.removeprefix("agent_")):
        if name in categories and name != "other":
            return name
    return None


def prior_failure_rate(stratum: str, categories: Sequence[str],
                       history: Mapping[str, float] | None = None,
                       history_labels: Mapping[str, float] | None = None) -> float:
    """The stratum's failure rate used for allocation: kind prior, shrunk toward history."""
    kind = stratum.partition(":")[0]
    prior = KIND_FAILURE_PRIOR.get(kind, 0.5)
    if kind == "escalated" and stratum_category(stratum, categories) is None:
        prior = ESCALATED_UNMATCHED
    if history and stratum in history:
        ell = float((history_labels or {}).get(stratum, PRIOR_LABELS))
        prior = (PRIOR_LABELS * prior + ell * float(history[stratum])) / (PRIOR_LABELS + ell)
    return prior


def stratum_rates(
    strata: Sequence[str],
    categories: Sequence[str],
    history: Mapping[str, float] | None = None,
    history_labels: Mapping[str, float] | None = None,
) -> np.ndarray:
    """(H, 1 + K) rates used for allocation and planning: the failure rate, then each category's."""
    k = max(len(categories), 1)
    fail = np.array([prior_failure_rate(h, categories, history, history_labels) for h in strata])
    named = np.array([stratum_category(h, categories) for h in strata], dtype=object)
    rates = np.empty((len(strata), 1 + len(categories)))
    rates[:, 0] = fail
    for j, c in enumerate(categories):
        rates[:, 1 + j] = np.where(named == c, REASON_MATCH_SHARE * fail,
                                   np.where(named == None, fail / k,  # noqa: E711 (elementwise)
                                            (1 - REASON_MATCH_SHARE) * fail / max(k - 1, 1)))
    return rates


def jeffreys_margins(rates: np.ndarray, sizes: np.ndarray, big_n: np.ndarray,
                     alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper margins (ȳ − l, u − ȳ) of the per-stratum Jeffreys interval the
    estimator reports (`proportions.jeffreys` on the effective size n* = n(N − 1)/(N − n),
    as `estimates.intervals`), at the expected count x = n*·p. `rates` (H, M), `sizes`
    (H,) or (H, G): the result is (H, M) or (H, G, M); a census (n ≥ N) has no margin.

    At the expected count rather than averaged over the binomial: one quantile per cell
    keeps an allocation at ~30 ms; on the benchmark worlds the ratio it predicts is
    within 0.01 of the realized one."""
    p = rates if sizes.ndim == 1 else rates[:, None, :]
    n = (sizes[:, None] if sizes.ndim == 1 else sizes[:, :, None]).astype(float)
    cap = (big_n[:, None] if sizes.ndim == 1 else big_n[:, None, None]).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(n >= cap, np.inf, n * (cap - 1) / (cap - n))  # a census has no margin
    p, n_eff = np.broadcast_arrays(p, n_eff)
    low, high = jeffreys(p, n_eff, alpha)
    return np.maximum(p - low, 0.0), np.maximum(high - p, 0.0)


def predicted_margins(share: np.ndarray, rates: np.ndarray, sizes: np.ndarray,
                      big_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) margin of each metric's stratified MOVER interval, per metric (M,):
    sqrt(Σ_h W_h² m_h²), as `estimates.intervals.mover_row` combines them."""
    low, high = jeffreys_margins(rates, sizes, big_n)
    w2 = share[:, None] ** 2
    return np.sqrt((w2 * low**2).sum(axis=0)), np.sqrt((w2 * high**2).sum(axis=0))


def optimal_sizes(
    population: Mapping[str, int],
    categories: Sequence[str],
    start: np.ndarray,
    proportional: np.ndarray,
    target: int,
    history: Mapping[str, float] | None = None,
    history_labels: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Labels per stratum of `population` (in its order; real-valued, summing to `target`
    when `start` does not already exceed it), from `start` (the uniform slice and the ≥ 1
    floor) up: each further label goes where it narrows the objective most (greedy
    marginal allocation: the objective is a smooth sum of square roots of per-stratum
    terms, so one label at a time lands within a label of the optimum; a general
    integer solver would add a dependency for nothing). Then `never_worse_than_proportional`.
    `proportional`: the proportional allocation's sizes at the same target."""
    strata = list(population)
    big_n = np.array([population[h] for h in strata], dtype=float)
    share = big_n / big_n.sum()
    rates = np.clip(stratum_rates(strata, categories, history, history_labels), 0.0, 1.0)
    a = np.r_[FAILURE_RATE_WEIGHT * max(len(categories), 1), np.ones(len(categories))]
    prop_widths = np.maximum(np.add(*predicted_margins(share, rates, proportional, big_n)), 1e-12)

    steps = max(int(np.floor(target - start.sum())), 0)
    grid = np.minimum(start[:, None] + np.arange(steps + 2)[None, :], big_n[:, None])  # (H, G)
    low, high = jeffreys_margins(rates, grid, big_n)
    w2 = share[:, None] ** 2
    low2, high2 = w2[:, None, :] * low**2, w2[:, None, :] * high**2  # (H, G, M)
    taken = np.zeros(len(strata), dtype=int)
    rows = np.arange(len(strata))
    sum_low, sum_high = low2[rows, 0].sum(axis=0), high2[rows, 0].sum(axis=0)

    def best() -> int:
        """The stratum whose next label lowers Σ_m a_m·width_m / proportional width_m most."""
        cand_low = sum_low + low2[rows, taken + 1] - low2[rows, taken]  # (H, M)
        cand_high = sum_high + high2[rows, taken + 1] - high2[rows, taken]
        objective = (a * (np.sqrt(cand_low) + np.sqrt(cand_high)) / prop_widths).sum(axis=1)
        room = start + taken + 1 <= big_n
        return int(np.argmin(np.where(room, objective, np.inf))) if room.any() else -1

    for _ in range(steps):
        h = best()
        if h < 0:
            break
        sum_low += low2[h, taken[h] + 1] - low2[h, taken[h]]
        sum_high += high2[h, taken[h] + 1] - high2[h, taken[h]]
        taken[h] += 1
    sizes = start + taken
    leftover = target - sizes.sum()
    if 0 < leftover < 1 and (h := best()) >= 0:
        sizes[h] += leftover
    return never_worse_than_proportional(share, rates, big_n, sizes, proportional)


def never_worse_than_proportional(share: np.ndarray, rates: np.ndarray, big_n: np.ndarray,
                                  sizes: np.ndarray, proportional: np.ndarray) -> np.ndarray:
    """The compromise trades one metric's width for the others'; this moves the sizes
    toward proportional, n(t) = (1 − t)·n_opt + t·n_prop, just far enough that no metric's
    predicted interval is wider than a proportional sample's. Each width is convex in
    the sizes and equal to the proportional one at t = 1, so "every metric at most
    proportional" holds on an interval [t*, 1]; t* by bisection (the predicate is
    monotone: a few lines, no solver needed)."""
    def widths(n: np.ndarray) -> np.ndarray:
        return np.add(*predicted_margins(share, rates, n, big_n))

    limit = widths(proportional) * (1 + 1e-9)

    def ok(t: float) -> bool:
        return bool(np.all(widths((1 - t) * sizes + t * proportional) <= limit))

    if ok(0.0):
        return sizes
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return (1 - hi) * sizes + hi * proportional
