"""The knobs of a snapshot's growth and selection (sizes, shares, thresholds), with defaults.

A plain frozen dataclass: the pure functions take it; the Dagster run config that fills
it is in `assets.py`.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSetConfig:
    test_share: float = 0.8  # share of conversations held out (split == "test")
    canary_size: int = 20  # first N test cases per agent, fixed forever
    initial_target: int = 50  # cases in an agent's first snapshot (at most)
    growth_per_week: int = 25  # new cases a later week may add (at most)
    max_cases: int = 300  # an agent's set stops growing here
    redact_pii: bool = True
    dedup_threshold: float = 0.8  # Jaccard of character 5-gram sets that counts as near-duplicate
    max_new_per_user: int | None = 3  # new cases one user may bring in a week
    pass_weight: float = 2.0  # a failure category's weight is 1; passes get this
    max_context_turns: int = 6  # previous turns kept as context
