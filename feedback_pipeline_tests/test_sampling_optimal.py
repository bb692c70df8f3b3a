"""The `optimal` allocation (issue #17) and the planning figure: where labels go, and how many."""

import numpy as np
import polars as pl
import pytest

from feedback_pipeline.sampling.allocation import SamplingConfig, allocate
from feedback_pipeline.sampling.design import sample_week
from feedback_pipeline.sampling.inclusion_check import check_inclusion
from feedback_pipeline.sampling.optimal import prior_failure_rate, stratum_category
from feedback_pipeline.sampling.planning import labels_needed, labels_needed_table
from feedback_pipeline_tests.test_sampling_design import scores

CATEGORIES = ("could_not_answer", "wrong_information", "tone_wrong", "tool_failed", "policy_violation", "other")
POPULATION = {"escalated:tool_failed": 40, "escalated:user_requested_human": 30, "thumbs_down": 120,
              "low_score": 600, "user_rewrote": 130, "thumbs_up": 90, "unrated": 3000}


def test_escalation_reasons_name_their_category():
    assert stratum_category("escalated:agent_could_not_answer", CATEGORIES) == "could_not_answer"
    assert stratum_category("escalated:tool_failed", CATEGORIES) == "tool_failed"
    assert stratum_category("escalated:user_requested_human", CATEGORIES) is None
    assert stratum_category("escalated:other", CATEGORIES) is None  # "other" says nothing
    assert stratum_category("thumbs_down", CATEGORIES) is None


def test_history_pulls_the_prior_by_its_label_count():
    prior = prior_failure_rate("unrated", CATEGORIES)
    assert prior_failure_rate("unrated", CATEGORIES, {"unrated": 0.0}, {"unrated": 20}) == pytest.approx(prior / 2)
    assert prior_failure_rate("unrated", CATEGORIES, {"unrated": 0.3}, {"unrated": 1e9}) == pytest.approx(0.3)


def test_optimal_moves_labels_from_known_failures_to_the_uncertain_bulk():
    config = SamplingConfig(budget=150, categories=CATEGORIES, allocation="fixed")
    fixed = allocate(POPULATION, config)
    optimal = allocate(POPULATION, SamplingConfig(budget=150, categories=CATEGORIES, allocation="optimal"))
    assert sum(optimal.values()) == sum(fixed.values()) == 150
    assert optimal["escalated:tool_failed"] < fixed["escalated:tool_failed"]
    assert optimal["unrated"] > fixed["unrated"]
    assert min(optimal.values()) >= 1  # π > 0 everywhere
    # Learned from last week: an `unrated` stratum that fails often gets more labels.
    risky = allocate(POPULATION, SamplingConfig(budget=150, categories=CATEGORIES, allocation="optimal"),
                     {"unrated": 0.3}, {"unrated": 200})
    assert risky["unrated"] > optimal["unrated"]


def test_optimal_queue_keeps_exact_inclusion_probabilities():
    frame = scores({"escalated:tone_wrong": 20, "thumbs_down": 60, "low_score": 300, "thumbs_up": 50, "unrated": 2000},
                   users=[f"u{i % 40}" for i in range(2430)])
    queue = sample_week(frame, SamplingConfig(budget=150, allocation="optimal", categories=CATEGORIES, user_cap=3))
    assert check_inclusion(queue) == []
    assert queue["stratum"].n_unique() == 5 and (queue["inclusion_prob"] > 0).all()
    assert queue.group_by("user_id").len()["len"].max() <= 3


def test_planning_figure_is_what_the_estimators_intervals_reach():
    # One stratum at the unrated prior rate p, the known truth: with the planned n labels,
    # the Jeffreys interval the estimator reports (on the effective n with the
    # finite-population correction) has its longer side at ±3 points, on average over
    # simulated draws; with a fifth fewer labels it does not.
    from feedback_pipeline.estimates.intervals import jeffreys

    p, big_n = prior_failure_rate("unrated", CATEGORIES), 100_000
    plan = labels_needed({"unrated": big_n}, SamplingConfig(allocation="optimal", categories=CATEGORIES))
    n = plan["labels_for_failure_rate"]
    rng = np.random.default_rng(3)

    def mean_longer_side(labels: int) -> float:
        y = rng.binomial(labels, p, 20_000) / labels
        lo, hi = jeffreys(y, np.full(y.shape, labels * (big_n - 1) / (big_n - labels)), 0.05)
        return float(np.mean(np.maximum(y - lo, hi - y)))

    assert mean_longer_side(n) == pytest.approx(0.03, rel=0.03)
    assert mean_longer_side(int(0.8 * n)) > 0.03
    # Wald's n (z²p(1−p)/h²) is too few: the upper side is longer than the lower.
    assert n > 1.959964**2 * p * (1 - p) / 0.03**2
    assert plan["labels_for_largest_category"] > plan["labels_for_failure_rate"]  # p/6 at ±1 point > p at ±3


def test_planning_table_per_agent_tightens_with_precision():
    frame = pl.concat([scores({"thumbs_down": 50, "low_score": 200, "unrated": 1500}, agent=a) for a in ("a", "b")])
    config = SamplingConfig(allocation="optimal", categories=CATEGORIES)
    table = labels_needed_table(frame, config)
    assert table["agent_id"].to_list() == ["a", "b"]
    assert table["largest_category"].is_not_null().all()
    loose = labels_needed({"thumbs_down": 50, "low_score": 200, "unrated": 1500}, config, failure_half_width=0.05)
    assert loose["labels_for_failure_rate"] < table["labels_for_failure_rate"][0] <= 1750
    assert np.all(table["labels_for_largest_category"].to_numpy() >= 1)


def _mean_interval_width(allocation: dict, rates: np.ndarray, population: dict, rng, reps: int = 4000) -> np.ndarray:
    """Mean width of the estimator's stratified MOVER interval (per-stratum Jeffreys, effective
    n with the finite-population correction) per metric, over simulated draws when stratum h
    (true rates rates[h]) gets allocation[h] labels: the known truth the guard predicts."""
    from feedback_pipeline.estimates.intervals import jeffreys

    big_n = np.array(list(population.values()), dtype=float)
    n = np.array([allocation[h] for h in population], dtype=float)
    share, n_eff = big_n / big_n.sum(), n * (big_n - 1) / (big_n - n)
    y = rng.binomial(n[None, :, None].astype(int), rates[None], (reps, *rates.shape)) / n[None, :, None]
    lo, hi = jeffreys(y, np.broadcast_to(n_eff[None, :, None], y.shape), 0.05)
    w2 = share[None, :, None] ** 2
    return (np.sqrt((w2 * (y - lo) ** 2).sum(axis=1)) + np.sqrt((w2 * (hi - y) ** 2).sum(axis=1))).mean(axis=0)


# A world (found by random search) where the compromise buys the failure rate's and most
# categories' precision with tool_failed's: big escalated strata that rarely fail.
TILTED = {"escalated:tool_failed": 6627, "escalated:user_requested_human": 4267, "thumbs_down": 1777,
          "low_score": 2603, "thumbs_up": 33, "unrated": 56}
TILTED_RATES = {"escalated:tool_failed": 0.028, "escalated:user_requested_human": 0.161, "thumbs_down": 0.787,
                "low_score": 0.554, "thumbs_up": 0.424, "unrated": 0.352}


def test_no_metric_pays_for_the_others_against_a_proportional_sample(monkeypatch):
    import feedback_pipeline.sampling.optimal as optimal_module

    labels = dict.fromkeys(TILTED, 200)
    config = SamplingConfig(budget=150, categories=CATEGORIES, allocation="optimal")
    proportional = allocate(TILTED, SamplingConfig(budget=150, categories=CATEGORIES, allocation="proportional"),
                            TILTED_RATES, labels)
    guarded = allocate(TILTED, config, TILTED_RATES, labels)
    with monkeypatch.context() as m:
        m.setattr(optimal_module, "never_worse_than_proportional", lambda share, rates, big_n, sizes, prop: sizes)
        unguarded = allocate(TILTED, config, TILTED_RATES, labels)
    truth = optimal_module.stratum_rates(list(TILTED), CATEGORIES, TILTED_RATES, labels)
    width = {name: _mean_interval_width(n, truth, TILTED, np.random.default_rng(17))
             for name, n in (("proportional", proportional), ("guarded", guarded), ("unguarded", unguarded))}
    tool_failed = 1 + CATEGORIES.index("tool_failed")
    assert width["unguarded"][tool_failed] > 1.005 * width["proportional"][tool_failed]  # what the guard is for
    assert np.all(width["guarded"] <= width["proportional"] * 1.005)  # within a label's rounding
    assert width["guarded"][0] < width["proportional"][0]  # and the failure rate still gains


def test_the_guard_binds_only_when_a_metric_would_lose():
    from feedback_pipeline.sampling.optimal import never_worse_than_proportional, predicted_margins

    big_n = np.array([500.0, 1500.0, 8000.0])
    share = big_n / big_n.sum()
    rates = np.array([[0.3, 0.3], [0.5, 0.01], [0.05, 0.001]])  # failure rate, one category
    proportional = 150 * share
    tilted = np.array([40.0, 10.0, 100.0])  # buys the failure rate with the category's precision

    def ratio(sizes):
        return np.add(*predicted_margins(share, rates, sizes, big_n)) / np.add(
            *predicted_margins(share, rates, proportional, big_n))

    assert ratio(tilted).max() > 1.05
    guarded = never_worse_than_proportional(share, rates, big_n, tilted, proportional)
    assert guarded.sum() == pytest.approx(150)
    assert ratio(guarded).max() == pytest.approx(1.0, abs=1e-6) and ratio(guarded).min() < 1.0
    harmless = np.array([12.0, 30.0, 108.0])  # wins on both: returned unchanged
    assert ratio(harmless).max() < 1.0
    assert np.allclose(never_worse_than_proportional(share, rates, big_n, harmless, proportional), harmless)
