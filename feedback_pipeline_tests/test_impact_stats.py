"""Impact statistics: calibration by simulation, BH, proxy gaming, change detection, declared changes."""

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.impact.compare import compare_change, compare_sides
from feedback_pipeline.impact.declared import DeclaredChangesError, read_declared_changes
from feedback_pipeline.impact.detect import detect_changes
from feedback_pipeline.impact.drift import population_stability_index
from feedback_pipeline.impact.effects import analytic_power, benjamini_hochberg, compare_estimates, side_estimate
from feedback_pipeline.impact.paired import paired_pass_rate
from feedback_pipeline.impact.schemas import ImpactMetrics
from feedback_pipeline.impact.windows import comparison_windows, window_plan

COMPARISON_SCHEMA = polars_schema(ImpactMetrics)

W0 = date(2026, 10, 5)


def clustered_binary(rng, clusters: int, size: int, p: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes in equal-size clusters, beta-binomial with mean p and intra-cluster correlation rho."""
    pg = np.full(clusters, p) if rho == 0 else rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1), clusters)
    y = rng.random((clusters, size)) < pg[:, None]
    return y.ravel().astype(float), np.repeat(np.arange(clusters), size)


def true_se(p: float, clusters: int, size: int, rho: float) -> float:
    return np.sqrt(p * (1 - p) * (1 + (size - 1) * rho) / (clusters * size))


def simulate(seeds, p0, p1, clusters=120, size=3, rho=0.1, naive=False) -> tuple[np.ndarray, np.ndarray]:
    """(p-values, standard errors) of the clustered comparison over seeds."""
    ps, ses = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        sides = []
        for p in (p0, p1):
            y, c = clustered_binary(rng, clusters, size, p, rho)
            sides.append(side_estimate(y, None if naive else c))
        out = compare_estimates(*sides)
        ps.append(out["p_value"])
        ses.append(out["std_error"])
    return np.array(ps), np.array(ses)


def test_aa_false_positive_rate_is_nominal():
    p, _ = simulate(range(400), 0.15, 0.15)
    fpr = np.mean(p < 0.05)
    assert 0.02 <= fpr <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400), fpr


def test_planted_effect_found_with_analytic_power():
    clusters, size, rho, p0, p1 = 150, 3, 0.1, 0.20, 0.14
    se = np.hypot(true_se(p0, clusters, size, rho), true_se(p1, clusters, size, rho))
    expected = analytic_power(p1 - p0, se)
    assert 0.4 < expected < 0.8
    p, _ = simulate(range(1000, 1300), p0, p1, clusters, size, rho)
    power = np.mean(p < 0.05)
    assert abs(power - expected) < 3 * np.sqrt(expected * (1 - expected) / 300), (power, expected)


def test_clustered_se_wider_than_naive_when_turns_correlate():
    seeds, rho, size = range(2000, 2200), 0.3, 4
    p_c, se_c = simulate(seeds, 0.2, 0.2, clusters=80, size=size, rho=rho)
    p_n, se_n = simulate(seeds, 0.2, 0.2, clusters=80, size=size, rho=rho, naive=True)
    ratio = np.mean(se_c / se_n)
    assert ratio == pytest.approx(np.sqrt(1 + (size - 1) * rho), rel=0.1)  # design effect
    assert np.mean(p_n < 0.05) > 0.10 and np.mean(p_c < 0.05) <= 0.09  # naive is overconfident
    _, se_c0 = simulate(seeds[:50], 0.2, 0.2, clusters=80, size=size, rho=0.0)
    _, se_n0 = simulate(seeds[:50], 0.2, 0.2, clusters=80, size=size, rho=0.0, naive=True)
    assert np.mean(se_c0 / se_n0) == pytest.approx(1.0, abs=0.05)


def test_cluster_variance_matches_statsmodels_ols():
    rng = np.random.default_rng(5)
    (y0, c0), (y1, c1) = clustered_binary(rng, 60, 4, 0.3, 0.2), clustered_binary(rng, 70, 4, 0.4, 0.2)
    out = compare_estimates(side_estimate(y0, c0), side_estimate(y1, c1))
    x = sm.add_constant(np.r_[np.zeros(len(y0)), np.ones(len(y1))])
    fit = sm.OLS(np.r_[y0, y1], x).fit(cov_type="cluster", cov_kwds={"groups": np.r_[c0, c1 + 1000]})
    assert out["effect"] == pytest.approx(fit.params[1])
    # statsmodels applies G/(G−1)·(N−1)/(N−K) once over both sides; we apply G_s/(G_s−1) per side.
    assert out["std_error"] == pytest.approx(fit.bse[1], rel=0.02)


def stratified_labels(rng, n: int = 3000, arms: bool = True) -> tuple[np.ndarray, ...]:
    """One week of traffic, a stratified label sample with unequal π, arms A/B by conversation."""
    conv = np.repeat(np.arange(n // 2), 2)
    risky = rng.random(n // 2)[conv] < 0.2  # a feedback signal that predicts failures
    y = rng.random(n) < np.where(risky, 0.5, 0.08)
    arm = (rng.random(n // 2) < 0.5)[conv] if arms else np.ones(n, bool)
    pi = np.where(risky, 0.15, 0.03)
    take = rng.random(n) < pi
    return y[take].astype(float), conv[take], 1 / pi[take], risky[take].astype(int), arm[take]


def test_weighted_domain_comparison_is_calibrated():
    """A/A between the arms of one stratified label sample: FPR and CI coverage nominal."""
    p, cover = [], []
    for seed in range(300):
        y, conv, w, stratum, arm = stratified_labels(np.random.default_rng(seed))
        ests = [side_estimate(y, conv, w, stratum, domain) for domain in (~arm, arm)]
        out = compare_estimates(*ests)
        p.append(out["p_value"])
        cover.append(out["ci_low"] <= 0 <= out["ci_high"])
    assert 0.02 <= np.mean(np.array(p) < 0.05) <= 0.085
    assert np.mean(cover) >= 0.915


def test_hajek_matches_hand_computation():
    y, w = np.array([1, 0, 0, 1, 0]), np.array([2.0, 2.0, 10.0, 10.0, 10.0])
    est = side_estimate(y, weight=w, stratum=[0, 0, 1, 1, 1], domain=[1, 1, 1, 1, 0])
    assert est.mean == pytest.approx((2 + 10) / 24) and est.n == 4


def test_bh_adjusted_is_at_least_raw_and_monotone():
    raw = [0.001, 0.04, None, 0.03, 0.5, 0.012, float("nan")]
    adj = benjamini_hochberg(raw)
    assert adj[2] is None and adj[6] is None
    pairs = sorted((r, a) for r, a in zip(raw, adj) if a is not None)
    assert all(a >= r for r, a in pairs)
    assert all(a1 <= a2 for (_, a1), (_, a2) in zip(pairs, pairs[1:]))


def turns(rng, n: int, week: date, fail: float, chars: float, refusal: float, thumbs_down: float, **versions):
    conv = rng.integers(0, max(n // 3, 1), n)
    return pl.DataFrame({
        "week": [week] * n, "trace_id": [f"{week}-{versions}-{i}" for i in range(n)],
        "conversation_id": [f"{week}-{versions}-c{c}" for c in conv], "agent_id": "a",
        "prompt_version": versions.get("prompt", "p1"), "retrieval_version": "r1",
        "model": versions.get("model", "m1"),
        "thumbs": [("down" if d else None) for d in rng.random(n) < thumbs_down],
        "escalated": rng.random(n) < 0.03, "escalation_reason": None, "user_rewrote": rng.random(n) < 0.05,
        "tool_error_count": (rng.random(n) < 0.03).astype(np.int64),
        "latency_ms": rng.lognormal(7, 0.4, n).astype(np.int64),
        "response_chars": rng.poisson(chars, n).astype(np.int64),
        "is_refusal": rng.random(n) < refusal, "has_disclaimer": rng.random(n) < 0.05,
        "judge_verdict": np.where(rng.random(n) < fail, "fail", "pass"), "judge_selection_prob": 1.0,
    }, schema_overrides={"thumbs": pl.String, "escalation_reason": pl.String})


def test_proxy_gaming_flag():
    rng = np.random.default_rng(11)
    before = turns(rng, 3000, W0, fail=0.15, chars=150, refusal=0.02, thumbs_down=0.04)
    gamed = turns(rng, 3000, W0, fail=0.18, chars=80, refusal=0.08, thumbs_down=0.025)
    better = turns(rng, 3000, W0, fail=0.10, chars=150, refusal=0.02, thumbs_down=0.025)
    flagged = compare_sides(before, gamed)
    assert flagged["proxy_gaming"].all()
    assert "response_chars" in flagged["proxy_gaming_reason"][0]
    genuine = compare_sides(before, better)
    assert not genuine["proxy_gaming"].any()
    assert genuine.filter(pl.col("metric") == "judge_failure_rate")["ci_high"][0] < 0


def world_like(weeks: dict[int, dict[str, float]], n: int = 400, seed: int = 0) -> pl.DataFrame:
    """Agent `a`'s weeks: {week index: {prompt version: share}}; model m1 -> m2 from week 3."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, mix in weeks.items():
        for version, share in mix.items():
            model = "m2" if k >= 3 else "m1"
            parts.append(turns(rng, int(n * share), W0 + timedelta(weeks=k), 0.15, 150, 0.02, 0.03,
                               prompt=version, model=model))
    return pl.concat(parts)


def test_detect_changes_finds_concurrent_and_sequential_changes():
    scores = world_like({0: {"p1": 1}, 1: {"p1": 0.996, "p2": 0.004}, 2: {"p1": .5, "p2": .5},
                         3: {"p1": .2, "p2": .8}, 4: {"p2": 1}, 5: {"p2": 1}})
    changes = detect_changes(scores)
    assert changes.select("dimension", "before_version", "after_version", "concurrent", "rollout_weeks").rows() == [
        ("prompt_version", "p1", "p2", True, 3), ("model", "m1", "m2", False, 1)]
    prompt = changes.row(0, named=True)
    assert prompt["change_week"] == W0 + timedelta(weeks=2)  # 0.4 % in week 1 is a straggler, not live
    assert prompt["after_first_seen"] == W0 + timedelta(weeks=1)
    assert [s["share"] for s in prompt["after_share_by_week"]] == pytest.approx([.5, .8, 1, 1], abs=0.01)
    plan = window_plan(prompt, scores)
    assert plan.design == "concurrent" and plan.before_weeks == plan.after_weeks
    assert plan.before_weeks == (W0 + timedelta(weeks=2), W0 + timedelta(weeks=3))
    assert plan.held == {"retrieval_version": "r1", "model": "m1"}  # the model changes in week 3: held
    arms = comparison_windows(prompt, scores, plan)
    assert arms["week"].unique().to_list() == [W0 + timedelta(weeks=2)]
    model = window_plan(changes.row(1, named=True), scores)
    assert model.design == "sequential"
    assert model.before_weeks == (W0 + timedelta(weeks=1), W0 + timedelta(weeks=2))
    assert model.after_weeks == (W0 + timedelta(weeks=3), W0 + timedelta(weeks=4))
    windows = comparison_windows(changes.row(1, named=True), scores)
    assert set(windows.filter(pl.col("side") == "after")["model"].unique()) == {"m2"}
    assert windows["prompt_version"].unique().to_list() == ["p2"]  # the prompt is held at the new one
    out = compare_change(changes.row(1, named=True), scores)
    assert out.columns == list(COMPARISON_SCHEMA) and out["change_id"].n_unique() == 1


def test_declared_changes_file(tmp_path):
    bad = tmp_path / "changes.csv"
    bad.write_text(
        "agent_id,dimension,before_version,after_version,effective_week,description\n"
        "a,prompt_version,p1,p2,2026-10-19,new prompt\n"
        "a,temperature,p1,p2,2026-10-21,\n")
    with pytest.raises(DeclaredChangesError) as err:
        read_declared_changes(bad)
    message = str(err.value)
    assert str(bad) in message and "row 2 (line 3)" in message
    assert "field dimension" in message and "field effective_week" in message and "2026-10-19" in message

    good = tmp_path / "changes.yaml"
    good.write_text("- agent_id: a\n  dimension: prompt_version\n  before_version: p1\n  after_version: p2\n"
                    f"  effective_week: {W0 + timedelta(weeks=2)}\n  description: terse prompt\n"
                    "- {agent_id: a, dimension: retrieval_version, before_version: r1, after_version: r2,"
                    f" effective_week: '{W0 + timedelta(weeks=4)}'}}\n")
    declared = read_declared_changes(good)
    scores = world_like({0: {"p1": 1}, 1: {"p1": 1}, 2: {"p1": .5, "p2": .5}, 3: {"p2": 1}})
    changes = detect_changes(scores, declared)
    prompt = changes.filter(pl.col("dimension") == "prompt_version").row(0, named=True)
    assert prompt["declared"] and prompt["detected"] and prompt["description"] == "terse prompt"
    unseen = changes.filter(pl.col("dimension") == "retrieval_version").row(0, named=True)
    assert unseen["declared"] and not unseen["detected"] and "not detected" in unseen["notes"]

    wrong = tmp_path / "changes.yml"
    wrong.write_text("- {agent_id: a, dimension: model, before_version: m1, after_version: m1, effetive_week: x}\n")
    with pytest.raises(DeclaredChangesError, match=r"entry 1, field 'effetive_week': unknown"):
        read_declared_changes(wrong)


def test_population_stability_index():
    assert population_stability_index({"a": 50, "b": 50}, {"b": 5, "a": 5}) == pytest.approx(0.0)
    shifted = population_stability_index([60, 40], [40, 60])
    assert shifted == pytest.approx(0.2 * np.log(1.5) * 2)
    assert np.isfinite(population_stability_index({"a": 10}, {"a": 10, "new_intent": 5}))


def test_paired_pass_rate_matches_mcnemar():
    before = np.array([True] * 60 + [False] * 40)
    after = before.copy()
    after[:5] = False  # 5 broken
    after[60:75] = True  # 15 fixed
    out = paired_pass_rate(before, after)
    assert out["effect"] == pytest.approx(0.10)
    assert out["p_value"] == pytest.approx(mcnemar([[55, 5], [15, 25]], exact=True).pvalue)
    assert out["ci_low"] < 0.10 < out["ci_high"] and out["ci_low"] > 0


def test_demo_world_changes_and_flags():
    """The planted releases of the demo world: four changes, travel is an A/B, only travel is flagged."""
    from feedback_pipeline.demo.world import generate_turns
    from feedback_pipeline.scoring.deterministic import deterministic_scores

    turns_, truth = generate_turns(48_000, 3, weeks=8)
    scores = turns_.join(truth.select("trace_id", "week"), on="trace_id").unnest("feedback").with_columns(
        deterministic_scores())
    changes = detect_changes(scores)
    assert sorted(changes.select("agent_id", "dimension", "after_version", "concurrent").rows()) == [
        ("dental_front_desk", "model", "llm-large-2026-07-r2", False),
        ("dental_front_desk", "prompt_version", "dental-v4", False),
        ("refunds", "retrieval_version", "refunds-kb-v6", False),
        ("travel", "prompt_version", "travel-v8-concise", True),
    ]
    flags = {}
    for change in changes.iter_rows(named=True):
        out = compare_change(change, scores)
        flags[change["after_version"]] = out["proxy_gaming"][0]
        if change["dimension"] == "model":  # the A/A re-deploy: nothing survives BH
            assert (out["p_adjusted"].drop_nulls() >= 0.05).all()
    assert flags == {"dental-v4": False, "refunds-kb-v6": False, "llm-large-2026-07-r2": False,
                     "travel-v8-concise": True}
