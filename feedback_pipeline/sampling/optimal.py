"""The `optimal` allocation policy: a compromise Neyman allocation over the failure rate
and every category rate, from stratum rates shrunk toward a prior.

Stratified SRS gives V_m = Σ_h W_h² S_hm² / n_h for metric m (the failure rate, or
one category's rate) with S_hm² = p_hm(1 − p_hm). Minimising Σ_m a_m V_m / V_m^prop
(each metric's variance relative to what a proportional sample would give, V_m^prop
∝ Σ_h W_h S_hm²) under Σ n_h = n gives, by Lagrange, n_h ∝ N_h·sqrt(Σ_m a_m S_hm² / V_m^prop):
the policy weight this module returns (`allocation.allocate` adds the uniform slice,
the ≥ 1 floor and the N_h ceiling). The failure rate counts as much as all
categories together (a = K for it, 1 for each of the K categories). The compromise is
then moved toward proportional until no metric's predicted variance is above a
proportional sample's (`never_worse_than_proportional`): no metric pays for the others.

Where the rates come from: a prior per stratum kind (escalations are almost all
failures: little to learn there, which is why they get few labels; `unrated` holds
most of the uncertainty), shrunk toward last weeks' labeled rates when there are
any (`PRIOR_LABELS` pseudo-labels against ℓ real ones). An escalation reason that
names a category makes that category most of the stratum's failures. A rate is
floored at half a hit at the proportional allocation's size: a rare category with
no hits in a big stratum still has an interval whose width shrinks with that
stratum's labels (a Jeffreys margin for 0 of ℓ is ≈ 2.5/ℓ, not 0).

Only the weights live here; the draws and their exact π are `design`'s.
"""

from collections.abc import Mapping, Sequence

import numpy as np

# Prior failure rate per stratum kind; `escalated` with a reason that names no category
# (user_requested_human, other, unspecified) gets ESCALATED_UNMATCHED.
KIND_FAILURE_PRIOR: Mapping[str, float] = {
    "escalated": 0.9, "thumbs_down": 0.5, "low_score": 0.5,
    "user_rewrote": 0.2, "thumbs_up": 0.05, "unrated": 0.06,
}
ESCALATED_UNMATCHED = 0.5
REASON_MATCH_SHARE = 0.8  # share of an escalation's failures in the category its reason names
PRIOR_LABELS = 20.0  # pseudo-labels behind the kind prior when last weeks' labels are used
FAILURE_RATE_WEIGHT = 1.0  # the failure rate's weight in the objective, in units of all categories together


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


def optimal_weights(
    population: Mapping[str, int],
    categories: Sequence[str],
    budget: int,
    history: Mapping[str, float] | None = None,
    history_labels: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Policy weights (allocation ∝ N_h × weight) for the strata of `population`, in its order."""
    strata = list(population)
    big_n = np.array([population[h] for h in strata], dtype=float)
    share = big_n / big_n.sum()
    rates = stratum_rates(strata, categories, history, history_labels)
    floor = 0.5 / np.maximum(budget * share, 1.0)[:, None]
    p = np.clip(np.maximum(rates, floor), 0.0, 1.0)
    s2 = np.maximum(p * (1 - p), 1e-12)
    v_prop = share @ s2  # ∝ each metric's variance under proportional allocation
    a = np.r_[FAILURE_RATE_WEIGHT * max(len(categories), 1), np.ones(len(categories))]
    weights = np.sqrt((s2 * (a / v_prop)).sum(axis=1))
    return never_worse_than_proportional(share, s2, weights)


def predicted_variance(share: np.ndarray, s2: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ_h W_h² S_hm² / q_h per metric m: n × the stratified variance when stratum h gets a
    share q_h of the labels (proportional: q = W, giving Σ_h W_h S_hm²)."""
    return (share[:, None] ** 2 * s2 / q[:, None]).sum(axis=0)


def never_worse_than_proportional(share: np.ndarray, s2: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The compromise trades one metric's variance for the others'; this moves it toward
    proportional just far enough that no metric's predicted variance exceeds what a
    proportional sample gives. Label shares q(t) = (1 − t)·q_opt + t·W: each metric's
    variance is convex in t and equals the proportional one at t = 1, so "every metric at
    most proportional" holds exactly on an interval [t*, 1]; t* is found by bisection
    (a few lines: the predicate is monotone, no solver needed)."""
    q_opt = share * weights / (share @ weights)
    limit = predicted_variance(share, s2, share) * (1 + 1e-9)

    def ok(t: float) -> bool:
        return bool(np.all(predicted_variance(share, s2, (1 - t) * q_opt + t * share) <= limit))

    if ok(0.0):
        return weights
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return ((1 - hi) * q_opt + hi * share) / share  # allocation ∝ N_h × weight ∝ q_h
