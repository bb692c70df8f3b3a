"""The annotation-queue design: strata, allocation, the heavy-clicker cap and exact π."""

from datetime import date

import numpy as np
import polars as pl
import pytest

from feedback_pipeline.sampling.allocation import SamplingConfig, allocate
from feedback_pipeline.sampling.design import DESIGN_COLUMNS, agent_week_seed, sample_agent_week, sample_week
from feedback_pipeline.sampling.inclusion_check import check_inclusion
from feedback_pipeline.sampling.priors import stratum_failure_rates
from feedback_pipeline.sampling.strata import assign_strata

WEEK = date(2026, 11, 16)


def scores(kinds: dict[str, int], users: list[str | None] | None = None, agent: str = "a") -> pl.DataFrame:
    """A minimal automated_scores frame with `kinds[k]` traces landing in stratum kind k."""
    flags = {
        "escalated:tone_wrong": dict(escalated=True, escalation_reason="tone_wrong"),
        "escalated:tool_failed": dict(escalated=True, escalation_reason="tool_failed"),
        "thumbs_down": dict(thumbs="down"),
        "low_score": dict(judge_verdict="fail"),
        "user_rewrote": dict(user_rewrote=True),
        "thumbs_up": dict(thumbs="up"),
        "unrated": {},
    }
    rows = []
    for kind, count in kinds.items():
        for _ in range(count):
            rows.append({
                "week": WEEK, "agent_id": agent, "trace_id": f"{agent}-t{len(rows):04d}",
                "user_id": f"u{len(rows)}", "thumbs": None, "escalated": False, "escalation_reason": None,
                "user_rewrote": False, "judge_verdict": "pass", "deterministic_low_score": False,
            } | flags[kind])
    frame = pl.DataFrame(rows, schema_overrides={"thumbs": pl.String, "escalation_reason": pl.String})
    if users is not None:
        frame = frame.with_columns(user_id=pl.Series(users, dtype=pl.String))
    return frame


def test_strata_partition_in_priority_order():
    frame = pl.DataFrame({
        "escalated": [True, True, False, False, False, False, False, None],
        "escalation_reason": ["tool_failed", None, None, None, None, None, None, None],
        "thumbs": ["down", None, "down", None, None, "up", None, None],
        "judge_verdict": ["fail", None, "fail", "fail", "pass", "fail", None, None],
        "deterministic_low_score": [False, False, False, False, True, False, None, None],
        "user_rewrote": [True, False, False, True, False, True, True, None],
    })
    assert assign_strata(frame)["stratum"].to_list() == [
        "escalated:tool_failed", "escalated:unspecified", "thumbs_down", "low_score",
        "low_score", "low_score", "user_rewrote", "unrated",
    ]


def test_budget_respected_every_stratum_drawn_and_columns():
    frame = scores({"escalated:tone_wrong": 3, "thumbs_down": 40, "low_score": 200, "thumbs_up": 30, "unrated": 2000})
    queue = sample_agent_week(frame, SamplingConfig(budget=60, user_cap=100))
    assert queue.columns[: len(DESIGN_COLUMNS)] == list(DESIGN_COLUMNS)
    assert set(frame.columns) <= set(queue.columns)
    assert queue.height == 60
    assert set(queue["stratum"]) == set(assign_strata(frame)["stratum"])
    sizes = queue.group_by("stratum").agg(pl.len(), pl.col("stratum_population").first())
    assert (sizes["len"] <= sizes["stratum_population"]).all()
    assert queue["queue_position"].sort().to_list() == list(range(1, 61))
    assert check_inclusion(queue) == []


def test_allocation_policies():
    population = {"escalated:tone_wrong": 20, "thumbs_down": 100, "unrated": 5000}
    fixed = allocate(population, SamplingConfig(budget=100, allocation="fixed"))
    proportional = allocate(population, SamplingConfig(budget=100, allocation="proportional"))
    assert sum(fixed.values()) == sum(proportional.values()) == 100
    assert fixed["escalated:tone_wrong"] > proportional["escalated:tone_wrong"] >= 1  # oversampled on purpose
    assert proportional["unrated"] == pytest.approx(100 * 5000 / 5120, abs=1)
    # Neyman follows N_h·S_h: a stratum that failed half the time last week gets more.
    neyman = allocate(population, SamplingConfig(budget=100, allocation="neyman"),
                      {"escalated:tone_wrong": 0.5, "thumbs_down": 0.5, "unrated": 0.01})
    assert neyman["thumbs_down"] > proportional["thumbs_down"]
    # Never more than N_h; leftover goes to the others; tiny budgets still reach every stratum.
    small = allocate({"escalated:x": 2, "thumbs_down": 3, "unrated": 50}, SamplingConfig(budget=40, allocation="fixed"))
    assert small == {"escalated:x": 2, "thumbs_down": 3, "unrated": 35}
    assert allocate({"a": 5, "b": 5, "c": 5}, SamplingConfig(budget=2)) == {"a": 1, "b": 1, "c": 1}
    assert allocate({"a": 5, "b": 5}, SamplingConfig(budget=100)) == {"a": 5, "b": 5}


def test_uniform_slice_gives_every_stratum_its_proportional_share():
    population = {"escalated:tone_wrong": 50, "unrated": 9950}
    config = SamplingConfig(budget=100, uniform_fraction=0.5, allocation="fixed", fixed_weights={"escalated": 1000.0})
    assert allocate(population, config)["unrated"] >= 0.5 * 100 * 9950 / 10000 - 1


def test_same_inputs_same_queue_and_row_order_does_not_matter():
    frame = scores({"thumbs_down": 30, "low_score": 80, "unrated": 500})
    first = sample_agent_week(frame, SamplingConfig(budget=40, seed=7))
    again = sample_agent_week(frame.sample(fraction=1.0, shuffle=True, seed=3), SamplingConfig(budget=40, seed=7))
    other = sample_agent_week(frame, SamplingConfig(budget=40, seed=8))
    assert first.equals(again)
    assert not first["trace_id"].equals(other["trace_id"])
    assert agent_week_seed(7, "a", WEEK) == agent_week_seed(7, "a", WEEK) != agent_week_seed(7, "b", WEEK)


def test_heavy_clicker_cap_holds_and_null_users_are_not_capped():
    users = ["heavy"] * 300 + [None] * 300 + [f"u{i}" for i in range(400)]
    frame = scores({"thumbs_down": 100, "low_score": 200, "unrated": 700}, users=users)
    queue = sample_agent_week(frame, SamplingConfig(budget=200, user_cap=5))
    per_user = queue.filter(pl.col("user_id").is_not_null()).group_by("user_id").len()
    assert per_user["len"].max() <= 5
    assert queue.filter(pl.col("user_id").is_null()).height > 5
    assert (queue.filter(pl.col("user_id") == "heavy")["user_cap_prob"] < 1).all()
    assert (queue.filter(pl.col("user_id").is_null())["user_cap_prob"] == 1).all()
    assert queue.height <= 200
    assert check_inclusion(queue) == []


def test_inclusion_probabilities_are_exact_by_monte_carlo():
    """Empirical inclusion frequency over many seeds matches π, cap included."""
    users = ["h1"] * 14 + ["h2"] * 8 + [f"u{i}" for i in range(26)]
    users = [users[i] for i in np.random.default_rng(0).permutation(len(users))]
    frame = scores({"escalated:tone_wrong": 6, "thumbs_down": 12, "unrated": 30}, users=users)
    reps = 1000
    hits = dict.fromkeys(frame["trace_id"], 0)
    pi = {}
    for seed in range(reps):
        queue = sample_agent_week(frame, SamplingConfig(budget=16, user_cap=2, seed=seed))
        for trace_id, p in queue.select("trace_id", "inclusion_prob").iter_rows():
            hits[trace_id] += 1
            assert pi.setdefault(trace_id, p) == pytest.approx(p)  # π does not depend on the draw
    assert set(pi) == set(hits)  # every trace was drawn at least once: π > 0 everywhere
    empirical = np.array([hits[t] / reps for t in pi])
    exact = np.array(list(pi.values()))
    sure = exact == 1
    assert (empirical[sure] == 1).all()
    z = (empirical - exact)[~sure] / np.sqrt(exact * (1 - exact) / reps)[~sure]
    assert np.abs(z).max() < 4.5
    assert exact.min() < 0.5 * exact.max()  # the cap really changed some π


def test_sum_of_weights_is_the_population_exactly_without_cap_and_on_average_with_it():
    users = ["heavy"] * 40 + [f"u{i}" for i in range(160)]
    frame = scores({"thumbs_down": 50, "unrated": 150}, users=users)
    free = sample_agent_week(frame, SamplingConfig(budget=30, user_cap=1000))
    totals = free.group_by("stratum").agg(w=(1 / pl.col("inclusion_prob")).sum(), big_n=pl.col("stratum_population").first())
    assert totals["w"].to_list() == pytest.approx(totals["big_n"].to_list())
    sums = []
    for seed in range(200):
        queue = sample_agent_week(frame, SamplingConfig(budget=30, user_cap=2, seed=seed))
        assert check_inclusion(queue) == []
        sums.append((1 / queue["inclusion_prob"]).sum())
    assert np.mean(sums) == pytest.approx(200, rel=0.03)


def test_check_inclusion_flags_broken_queues():
    queue = sample_agent_week(scores({"thumbs_down": 30, "unrated": 300}), SamplingConfig(budget=20))
    assert check_inclusion(queue) == []
    assert check_inclusion(queue.with_columns(inclusion_prob=pl.col("inclusion_prob") * 2))
    assert check_inclusion(queue.with_columns(inclusion_prob=pl.lit(0.0)))
    assert check_inclusion(queue.with_columns(stratum_population=pl.col("stratum_population") + 50))
    assert check_inclusion(queue.slice(1))  # a lost row


def test_queue_order_interleaves_strata_rare_first():
    frame = scores({"escalated:tone_wrong": 4, "thumbs_down": 30, "low_score": 100, "unrated": 1000})
    queue = sample_agent_week(frame, SamplingConfig(budget=60))
    first = queue.sort("queue_position").head(4)["stratum"].to_list()
    assert first == ["escalated:tone_wrong", "thumbs_down", "low_score", "unrated"]
    half = queue.filter(pl.col("queue_position") <= 30).group_by("stratum").len()
    shares = half.join(queue.group_by("stratum").len(), on="stratum").with_columns(s=pl.col("len") / pl.col("len_right"))
    assert shares["s"].min() >= 0.4  # stopping half way leaves every stratum about half labeled


def test_sample_week_maps_over_agents_and_handles_empty_input():
    both = pl.concat([scores({"thumbs_down": 20, "unrated": 300}, agent="a"),
                      scores({"thumbs_down": 20, "unrated": 300}, agent="b")])
    queue = sample_week(both, SamplingConfig(budget=25))
    assert queue.group_by("agent_id").len().sort("agent_id")["len"].to_list() == [25, 25]
    assert check_inclusion(queue) == []
    empty = sample_week(both.clear())
    assert empty.is_empty() and empty.columns[: len(DESIGN_COLUMNS)] == list(DESIGN_COLUMNS)


def test_stratum_failure_rates_feed_neyman():
    labeled = pl.DataFrame({
        "agent_id": ["a"] * 4, "stratum": ["thumbs_down", "thumbs_down", "unrated", "unrated"],
        "inclusion_prob": [0.5, 0.25, 0.1, 0.1], "verdict": ["fail", "pass", "pass", None],
    })
    rates = stratum_failure_rates(labeled)
    assert rates.filter(pl.col("stratum") == "thumbs_down")["failure_rate"][0] == pytest.approx(2 / 6)
    assert rates.filter(pl.col("stratum") == "unrated")["failure_rate"][0] == 0
    queue = sample_week(scores({"thumbs_down": 50, "unrated": 500}),
                        SamplingConfig(budget=30, allocation="neyman"), rates)
    assert queue.height == 30
