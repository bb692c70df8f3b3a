"""The `optimal` allocation (issue #17) and the planning figure: where labels go, and how many."""

import numpy as np
import polars as pl
import pytest

from feedback_pipeline.sampling.allocation import SamplingConfig, allocate
from feedback_pipeline.sampling.design import sample_week
from feedback_pipeline.sampling.inclusion_check import check_inclusion
from feedback_pipeline.sampling.optimal import prior_failure_rate, stratum_category
from feedback_pipeline.sampling.planning import Z95, labels_needed, labels_needed_table
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


def test_planning_figure_matches_simple_random_sampling_on_one_stratum():
    # One stratum at the unrated prior rate p: n = z²p(1−p)/h² with the finite-population correction.
    p, big_n = prior_failure_rate("unrated", CATEGORIES), 100_000
    plan = labels_needed({"unrated": big_n}, SamplingConfig(allocation="optimal", categories=CATEGORIES))
    n0 = Z95**2 * p * (1 - p) / 0.03**2
    assert plan["labels_for_failure_rate"] == pytest.approx(n0 / (1 + n0 / big_n), abs=2)
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


def _stratified_sd(allocation: dict, rates: dict, population: dict, rng=None, reps: int = 200_000) -> float:
    """SD of the stratified estimator Σ W_h ȳ_h when stratum h (true rate rates[h]) gets
    allocation[h] labels drawn with replacement: exact, or by Monte Carlo given `rng`."""
    total = sum(population.values())
    if rng is None:
        return float(np.sqrt(sum((population[h] / total) ** 2 * rates[h] * (1 - rates[h]) / allocation[h]
                                 for h in population)))
    draws = sum(population[h] / total * rng.binomial(allocation[h], rates[h], reps) / allocation[h]
                for h in population)
    return float(np.std(draws))


# A world (found by random search) where the compromise buys the tool_failed category's
# precision with the failure rate's: every stratum fails often and the escalated one is big.
NOISY = {"escalated:tool_failed": 4282, "escalated:user_requested_human": 382, "thumbs_down": 225,
         "thumbs_up": 909, "unrated": 951}
NOISY_RATES = {"escalated:tool_failed": 0.26, "escalated:user_requested_human": 0.29, "thumbs_down": 0.68,
               "thumbs_up": 0.78, "unrated": 0.78}


def test_no_metric_pays_for_the_others_against_a_proportional_sample(monkeypatch):
    import feedback_pipeline.sampling.optimal as optimal_module

    labels = dict.fromkeys(NOISY, 200)
    config = SamplingConfig(budget=150, categories=CATEGORIES, allocation="optimal")
    proportional = allocate(NOISY, SamplingConfig(budget=150, categories=CATEGORIES, allocation="proportional"),
                            NOISY_RATES, labels)
    guarded = allocate(NOISY, config, NOISY_RATES, labels)
    with monkeypatch.context() as m:
        m.setattr(optimal_module, "never_worse_than_proportional", lambda share, s2, weights: weights)
        unguarded = allocate(NOISY, config, NOISY_RATES, labels)
    exact = {name: _stratified_sd(n, NOISY_RATES, NOISY) for name, n in
             (("proportional", proportional), ("guarded", guarded), ("unguarded", unguarded))}
    assert exact["unguarded"] > 1.01 * exact["proportional"]  # what the guard is for
    assert exact["guarded"] <= exact["proportional"] * (1 + 1e-9)
    simulated = _stratified_sd(guarded, NOISY_RATES, NOISY, np.random.default_rng(17))
    assert simulated == pytest.approx(exact["guarded"], rel=0.01)  # the known truth, by simulation


def test_the_guard_binds_only_when_a_metric_would_lose():
    from feedback_pipeline.sampling.optimal import never_worse_than_proportional, predicted_variance

    share = np.array([0.05, 0.15, 0.8])
    s2 = np.array([[0.09, 0.09], [0.25, 0.01], [0.05, 0.0001]])  # failure rate, one category
    tilted = np.array([3.0, 0.3, 1.0])  # buys the category with the failure rate's precision
    guarded = never_worse_than_proportional(share, s2, tilted)
    q = share * guarded / (share @ guarded)
    ratio = predicted_variance(share, s2, q) / predicted_variance(share, s2, share)
    assert ratio.max() == pytest.approx(1.0, abs=1e-6) and ratio.min() < 1.0
    harmless = np.ones(3)  # proportional itself is returned unchanged
    assert np.allclose(never_worse_than_proportional(share, s2, harmless), harmless)
