"""How many draws each stratum gets: the `SamplingConfig` and `allocate` (n_h per stratum).

Every non-empty stratum gets ≥ 1 draw (π > 0 for every trace); a `uniform_fraction`
of the budget is spread in proportion to N_h (a uniform slice of all traffic kept
inside the stratified design); the rest follows the policy (`fixed` weights × N_h,
`proportional` N_h, `neyman` N_h·S_h; or `optimal`: on top of the slice, labels
where they narrow the reported intervals most, see `optimal`); never more than N_h,
leftover budget re-spread by the same shares. The strata themselves are `strata`; the
draws `design`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from feedback_pipeline.rubrics import failure_categories
from feedback_pipeline.sampling.optimal import optimal_sizes

# `fixed`: sampling-rate multipliers relative to unrated traffic (allocation ∝ N_h × weight),
# the default before issue #17: escalations and thumbs-down carry most failures.
DEFAULT_FIXED_WEIGHTS: Mapping[str, float] = {
    "escalated": 20.0, "thumbs_down": 10.0, "low_score": 5.0,
    "user_rewrote": 3.0, "thumbs_up": 1.0, "unrated": 1.0,
}


@dataclass(frozen=True)
class SamplingConfig:
    """How one agent-week's queue is drawn (see `design`'s module docstring)."""

    budget: int = 150
    uniform_fraction: float = 0.2
    # `optimal` since issue #17 (docs/statistics.md: narrower intervals than `fixed` and
    # than a proportional sample of the same budget on the benchmark worlds).
    allocation: Literal["fixed", "proportional", "neyman", "optimal"] = "optimal"
    # Keys: a stratum kind ("escalated", ...) or a full stratum ("escalated:tone_wrong").
    fixed_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FIXED_WEIGHTS))
    # Neyman: S_h = sqrt(p(1-p)) from last week's stratum failure rate, floored;
    # a stratum without a prior gets p = 0.5 (the largest S_h).
    neyman_sd_floor: float = 0.1
    user_cap: int = 5
    seed: int = 0
    # `optimal`: the failure categories whose rates the allocation also serves
    # (None: the newest rubric's).
    categories: tuple[str, ...] | None = None


def allocate(
    population: Mapping[str, int],
    config: SamplingConfig,
    prior_failure_rates: Mapping[str, float] | None = None,
    prior_labels: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Draws n_h per stratum: ≥ 1 each, ≤ N_h, summing to the budget.

    `prior_failure_rates` (last week's per stratum) and `prior_labels` (how many
    labels each rests on) feed `neyman` and `optimal`.

    (Or to the number of non-empty strata when that is larger: π > 0 comes first;
    or to N when the agent-week has fewer traces than the budget: all are drawn.)
    """
    strata = [h for h in population if population[h] > 0]
    big_n = np.array([population[h] for h in strata], dtype=float)
    target = min(max(config.budget, len(strata)), int(big_n.sum()))
    if target >= big_n.sum():
        return {h: int(c) for h, c in zip(strata, big_n)}
    uniform = config.uniform_fraction * config.budget * big_n / big_n.sum()
    if config.allocation == "optimal":
        categories = failure_categories() if config.categories is None else config.categories
        ideal = optimal_sizes({h: population[h] for h in strata}, categories,
                              np.minimum(big_n, np.maximum(1.0, uniform)), _spread(big_n, uniform, big_n, target),
                              target, prior_failure_rates, prior_labels)
    else:
        ideal = _spread(big_n, uniform, big_n * _policy_weights(strata, config, prior_failure_rates), target)
    n = np.clip(np.floor(ideal), 1, big_n)
    while n.sum() != target:  # largest-remainder rounding within [1, N_h]
        gap = ideal - n
        if n.sum() < target:
            n[np.argmax(np.where(n < big_n, gap, -np.inf))] += 1
        else:
            n[np.argmin(np.where(n > 1, gap, np.inf))] -= 1
    return {h: int(k) for h, k in zip(strata, n)}


def _spread(big_n: np.ndarray, uniform: np.ndarray, policy: np.ndarray, target: int) -> np.ndarray:
    """min(N_h, max(1, uniform_h + t·policy_h)) with t set so the sizes sum to `target`."""
    def spread(t: float) -> np.ndarray:
        return np.minimum(big_n, np.maximum(1.0, uniform + t * policy))

    lo, hi = 0.0, 1.0
    while spread(hi).sum() < target and hi < 1e15:
        hi *= 2
    for _ in range(100):  # bisection on the policy scale: Σ spread(t) is monotone in t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spread(mid).sum() < target else (lo, mid)
    return spread(hi)


def _policy_weights(strata: list[str], config: SamplingConfig, prior: Mapping[str, float] | None) -> np.ndarray:
    if config.allocation == "proportional":
        return np.ones(len(strata))
    if config.allocation == "fixed":
        weights = config.fixed_weights
        return np.array([weights.get(h, weights.get(h.partition(":")[0], 1.0)) for h in strata], dtype=float)
    if config.allocation == "neyman":
        p = np.array([(prior or {}).get(h, 0.5) for h in strata], dtype=float)
        return np.maximum(np.sqrt(np.clip(p, 0, 1) * (1 - np.clip(p, 0, 1))), config.neyman_sd_floor)
    raise ValueError(f"unknown allocation policy {config.allocation!r}")
