"""A small version of benchmarks/label_efficiency.py: with a known truth, the `optimal` design
gives narrower intervals than today's fixed weights and no wider than a proportional sample."""

from dataclasses import replace

import polars as pl

from benchmarks.label_efficiency import WORLDS, draw, simulate_world, summarise, truth_rates
from feedback_pipeline.estimates.estimators import estimate_quality
from feedback_pipeline.rubrics import failure_categories

CATEGORIES = failure_categories("v1")
# The demo world, one agent, smaller: a few seconds for the whole simulation.
WORLD = replace(WORLDS["demo"], agents=(("agent_a", 2000, 0.15),))


def simulate(seeds: range, designs: tuple[str, ...]) -> pl.DataFrame:
    rows = []
    for seed in seeds:
        scores = simulate_world(WORLD, seed, judge=False)
        truth = truth_rates(scores)
        for design in designs:
            population, labeled = draw(WORLD, scores, design, seed, judge=False, budget=100)
            rows.append(estimate_quality(population, labeled, CATEGORIES).filter(pl.col("method") == "hajek")
                        .join(truth, on=["agent_id", "metric"])
                        .with_columns(world=pl.lit("demo"), judge=pl.lit(False), design=pl.lit(design)))
    return summarise(pl.concat(rows))


def test_optimal_is_narrower_than_fixed_and_no_wider_than_proportional():
    table = simulate(range(6), ("fixed", "proportional", "optimal_cold"))
    ratio = {(d, m): r for d, m, r in table.select("design", "metric", "ratio").iter_rows()}
    assert ratio[("fixed", "failure_rate")] > 1.08  # before #17: the fixed weights lose to proportional
    assert ratio[("optimal_cold", "failure_rate")] < ratio[("fixed", "failure_rate")] - 0.08
    assert ratio[("optimal_cold", "failure_rate")] <= 1.03
    categories = [r for (d, m), r in ratio.items() if d == "optimal_cold" and m != "failure_rate"]
    assert max(categories) <= 1.02 and sum(categories) / len(categories) < 0.97
    # Known truth: the intervals still cover it (6 seeds × 7 metrics; 95 % each).
    covered = table.filter(pl.col("design") == "optimal_cold").select((pl.col("coverage") * pl.col("n")).sum())
    assert covered.item() >= 0.85 * 6 * 7
