"""The planning figure: how many labels an agent's next queue needs for a given precision.

Predicted from the design alone (no draws): the strata sizes of the agent's latest
week, the stratum rates `optimal.stratum_rates` uses (kind priors shrunk toward last
week's labeled rates), and the label shares the config's allocation makes at the
configured budget, scaled to each candidate n. "±h" means the interval the estimator
will report (`optimal.predicted_margins`: per-stratum Jeffreys margins combined by
MOVER) reaches at most h on either side, so a rare rate's long upper tail counts;
the smallest such n is found by bisection. Shown in the `annotation_queue` metadata;
the weekly report calls `labels_needed_table`.
"""

from collections.abc import Mapping

import numpy as np
import polars as pl

from feedback_pipeline.rubrics import failure_categories
from feedback_pipeline.sampling.allocation import SamplingConfig, allocate
from feedback_pipeline.sampling.optimal import predicted_margins, stratum_rates
from feedback_pipeline.sampling.strata import assign_strata


def predicted_half_width(population: Mapping[str, int], rates: np.ndarray, shares: np.ndarray,
                         budget: int) -> np.ndarray:
    """The larger margin of each metric's 95 % interval (columns of `rates`) at `budget`
    labels spread by `shares` (≥ 1 and ≤ N_h per stratum: a stratum that runs out of traces
    does not pass its labels on, so the figure errs on the side of more labels)."""
    big_n = np.array(list(population.values()), dtype=float)
    sizes = np.clip(shares * budget, 1.0, big_n)
    return np.maximum(*predicted_margins(big_n / big_n.sum(), rates, sizes, big_n))


def labels_needed(
    population: Mapping[str, int],
    config: SamplingConfig = SamplingConfig(allocation="optimal"),
    history: Mapping[str, float] | None = None,
    history_labels: Mapping[str, float] | None = None,
    failure_half_width: float = 0.03,
    category_half_width: float = 0.01,
) -> dict[str, object]:
    """Labels for ±`failure_half_width` on the failure rate and ±`category_half_width` on the
    largest category, for one agent-week with `population` traces per stratum."""
    population = {h: int(c) for h, c in population.items() if c > 0}
    categories = tuple(config.categories or failure_categories())
    rates = stratum_rates(list(population), categories, history, history_labels)
    weight = np.array(list(population.values()), dtype=float)
    largest = int(np.argmax(weight @ rates[:, 1:])) if categories else None
    total = int(weight.sum())
    draws = allocate(population, config, history, history_labels)
    shares = np.array([draws.get(h, 0) for h in population], dtype=float) / max(sum(draws.values()), 1)

    def smallest(column: int, target: float) -> int:
        lo, hi = 1, total  # half-width is 0 at a census
        while lo < hi:
            mid = (lo + hi) // 2
            if predicted_half_width(population, rates, shares, mid)[column] <= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    return {
        "labels_for_failure_rate": smallest(0, failure_half_width),
        "largest_category": categories[largest] if largest is not None else None,
        "labels_for_largest_category": smallest(1 + largest, category_half_width) if largest is not None else None,
    }


def labels_needed_table(scores: pl.DataFrame, config: SamplingConfig = SamplingConfig(allocation="optimal"),
                        prior_failure_rates: pl.DataFrame | None = None) -> pl.DataFrame:
    """`labels_needed` per agent from a week's `automated_scores` (its strata sizes stand in
    for next week's) and, optionally, last week's stratum failure rates (agent_id, stratum,
    failure_rate: `priors.stratum_failure_rates`)."""
    frame = scores if "stratum" in scores.columns else assign_strata(scores)
    rows = []
    for (agent_id,), group in frame.group_by("agent_id", maintain_order=True):
        history = counts = None
        if prior_failure_rates is not None:
            mine = prior_failure_rates.filter(pl.col("agent_id") == agent_id)
            history = dict(mine.select("stratum", "failure_rate").iter_rows())
            counts = dict(mine.select("stratum", "labels").iter_rows()) if "labels" in mine.columns else None
        population = dict(group.group_by("stratum").len().sort("stratum").iter_rows())
        rows.append({"agent_id": agent_id, **labels_needed(population, config, history, counts)})
    schema = {"agent_id": pl.String, "labels_for_failure_rate": pl.Int64, "largest_category": pl.String,
              "labels_for_largest_category": pl.Int64}
    return pl.DataFrame(rows, schema=schema).sort("agent_id")
