"""Quality estimators: hand-checked figures, edge cases, and a small known-truth simulation."""

from datetime import date

import numpy as np
import polars as pl
import pytest

from benchmarks.coverage import label_queue, simulate_scores, truth_rates
from feedback_pipeline.rubrics import failure_categories
from feedback_pipeline.sampling.allocation import SamplingConfig
from feedback_pipeline.sampling.design import sample_week
from feedback_pipeline.estimates.estimators import estimate_quality

WEEK = date(2026, 11, 16)


def population(strata: dict[str, int], judge: list[str | None] | None = None, thumbs=None) -> pl.DataFrame:
    """Traces t0000.. of agent `a`, `strata[h]` of them in stratum h, in order."""
    names = [h for h, n in strata.items() for _ in range(n)]
    n = len(names)
    return pl.DataFrame({
        "week": [WEEK] * n, "agent_id": ["a"] * n, "trace_id": [f"t{i:04d}" for i in range(n)],
        "stratum": names, "thumbs": thumbs or [None] * n,
        "judge_verdict": judge or ["pass"] * n,
        "judge_failure_category": [("other" if v == "fail" else None) for v in (judge or ["pass"] * n)],
    }, schema_overrides={"thumbs": pl.String, "judge_verdict": pl.String, "judge_failure_category": pl.String})


def labels(pop: pl.DataFrame, verdicts: dict[str, list[str | None]]) -> pl.DataFrame:
    """Label the first len(verdicts[h]) traces of stratum h (an SRS by construction here)."""
    rows = []
    for h, vs in verdicts.items():
        ids = pop.filter(pl.col("stratum") == h)["trace_id"].to_list()
        for trace_id, v in zip(ids, vs):
            rows.append({"trace_id": trace_id, "stratum": h, "inclusion_prob": len(vs) / len(ids),
                         "stratum_population": len(ids), "stratum_sample_size": len(vs),
                         "verdict": v, "failure_category": "other" if v == "fail" else None})
    return pl.DataFrame(rows, schema_overrides={"verdict": pl.String, "failure_category": pl.String})


def row(out: pl.DataFrame, method: str, metric: str = "failure_rate") -> dict:
    return out.filter((pl.col("method") == method) & (pl.col("metric") == metric)).row(0, named=True)


def test_hajek_and_ht_match_hand_computation():
    pop = population({"low_score": 100, "unrated": 900})
    lab = labels(pop, {"low_score": ["fail"] * 5 + ["pass"] * 5, "unrated": ["fail"] * 3 + ["pass"] * 27})
    out = estimate_quality(pop, lab, ["other"])
    hajek = row(out, "hajek")
    assert hajek["estimate"] == pytest.approx(0.1 * 0.5 + 0.9 * 0.1)
    assert row(out, "horvitz_thompson")["estimate"] == pytest.approx(hajek["estimate"])
    expected_se = np.sqrt(0.01 * (1 - 10 / 100) * (0.25 * 10 / 9) / 10 + 0.81 * (1 - 30 / 900) * (0.09 * 30 / 29) / 30)
    assert hajek["std_error"] == pytest.approx(expected_se)
    assert hajek["ci_low"] < hajek["estimate"] < hajek["ci_high"]
    assert row(out, "naive_sample")["estimate"] == pytest.approx(8 / 40)
    assert hajek["n_labeled"] == 40 and hajek["n_population"] == 1000
    assert set(out["method"]) == {"hajek", "horvitz_thompson", "ppi", "naive_sample", "naive_thumbs"}


def test_every_label_the_same_keeps_the_interval_open():
    pop = population({"thumbs_down": 50, "unrated": 500})
    passes = estimate_quality(pop, labels(pop, {"thumbs_down": ["pass"] * 10, "unrated": ["pass"] * 40}), ["other"])
    for method in ("hajek", "horvitz_thompson", "ppi", "naive_sample"):
        r = row(passes, method)
        assert r["estimate"] == 0 and r["ci_low"] == 0 and r["ci_high"] > 0.01
    fails = estimate_quality(pop, labels(pop, {"thumbs_down": ["fail"] * 10, "unrated": ["fail"] * 40}), ["other"])
    r = row(fails, "hajek")
    assert r["estimate"] == 1 and r["ci_high"] == 1 and r["ci_low"] < 0.99


def test_stratum_without_labels_is_merged_and_one_label_is_flagged():
    pop = population({"escalated:tone_wrong": 5, "thumbs_down": 40, "unrated": 400})
    lab = labels(pop, {"thumbs_down": ["fail"], "unrated": ["fail"] * 2 + ["pass"] * 18})
    r = row(estimate_quality(pop, lab, ["other"]), "hajek")
    assert "escalated:tone_wrong (0 labels) merged into thumbs_down" in r["notes"]
    assert "thumbs_down has 1 label" in r["notes"]
    assert r["estimate"] == pytest.approx(45 / 445 * 1.0 + 400 / 445 * 0.1)
    assert r["ci_low"] <= r["estimate"] <= r["ci_high"]


def test_agent_week_without_labels_gives_null_rows_with_a_note():
    pop = population({"thumbs_down": 10, "unrated": 90}, thumbs=["down"] * 10 + [None] * 80 + ["up"] * 10)
    lab = labels(pop, {"unrated": [None] * 5})  # queued, nobody labeled yet
    out = estimate_quality(pop, lab, ["other"])
    design = out.filter(pl.col("method") != "naive_thumbs")
    assert design["estimate"].null_count() == design.height == 2 * 4
    assert (design["notes"] == "no human labels in this agent-week").all()
    assert row(out, "naive_thumbs")["estimate"] == pytest.approx(0.5)
    assert row(out, "hajek")["n_labeled"] == 0


def test_ppi_with_a_perfect_judge_is_the_judge_mean_and_narrower():
    rng = np.random.default_rng(1)
    truth = np.where(rng.random(600) < 0.2, "fail", "pass").tolist()
    pop = population({"unrated": 600}, judge=truth)
    lab = labels(pop, {"unrated": truth[:60]})
    out = estimate_quality(pop, lab, ["other"])
    ppi, hajek = row(out, "ppi"), row(out, "hajek")
    assert ppi["estimate"] == pytest.approx(truth.count("fail") / 600)
    assert 0 < ppi["ci_high"] - ppi["ci_low"] < hajek["ci_high"] - hajek["ci_low"]
    assert "lambda=1.000" in ppi["notes"]


def test_ppi_is_unbiased_when_the_judge_errs_more_on_failures():
    """Traces the judge could not score get their stratum's judged mean; still unbiased."""
    rng = np.random.default_rng(2)
    n = 800
    fail = rng.random(n) < 0.25
    judge = np.where(rng.random(n) < np.where(fail, 0.85, 0.1), "fail", "pass").astype(object)
    judge[(rng.random(n) < np.where(fail, 0.4, 0.02))] = None  # errors concentrate on failures
    pop = population({"unrated": n}, judge=judge.tolist())
    truth = np.where(fail, "fail", "pass")
    estimates = []
    for rep in range(120):
        pick = np.random.default_rng(rep).choice(n, size=60, replace=False)
        lab = pl.DataFrame({
            "trace_id": [f"t{i:04d}" for i in pick], "stratum": "unrated", "inclusion_prob": 60 / n,
            "stratum_population": n, "stratum_sample_size": 60, "verdict": truth[pick].tolist(),
            "failure_category": ["other" if f else None for f in fail[pick]],
        })
        estimates.append(row(estimate_quality(pop, lab, ["other"]), "ppi")["estimate"])
    assert np.mean(estimates) == pytest.approx(fail.mean(), abs=3 * np.std(estimates) / np.sqrt(120))


def test_without_judge_ppi_rows_are_null():
    pop = population({"unrated": 100}, judge=[None] * 100)
    r = row(estimate_quality(pop, labels(pop, {"unrated": ["pass", "fail"] * 5}), ["other"]), "ppi")
    assert r["estimate"] is None and r["notes"] == "no judge verdicts in this agent-week"


def test_bad_labels_are_refused():
    pop = population({"unrated": 20})
    lab = labels(pop, {"unrated": ["pass"] * 4})
    with pytest.raises(ValueError, match="one label per trace_id"):
        estimate_quality(pop, pl.concat([lab, lab]), ["other"])
    with pytest.raises(ValueError, match="not in population"):
        estimate_quality(pop.slice(1), lab, ["other"])
    with pytest.raises(ValueError, match="pass or fail"):
        estimate_quality(pop, lab.with_columns(verdict=pl.lit("maybe")), ["other"])


@pytest.mark.parametrize(("allocation", "naive_bias"), [("fixed", 0.1), ("optimal", 0.05)])
def test_small_simulation_covers_the_truth(allocation, naive_bias):
    """40 seeds of the benchmark's skewed world (one agent, fewer traces): sane coverage, under
    the heavily oversampling `fixed` design and the default `optimal` one (which oversamples
    known failures less, so its unweighted share is less biased, but still visibly)."""
    rows = []
    for seed in range(40):
        scores = simulate_scores(seed, {"agent_a": 1500})
        queue = sample_week(scores, SamplingConfig(budget=100, seed=seed, allocation=allocation))
        labeled = label_queue(queue, scores, {"agent_a": 0.85})
        out = estimate_quality(scores, labeled, failure_categories("v1"))
        rows.append(out.join(truth_rates(scores), on=["agent_id", "metric"]))
    results = pl.concat(rows)
    assert results["rubric_versions"].drop_nulls().unique().to_list() == ["v1"]
    assert ((results["ci_low"] <= results["estimate"]) & (results["estimate"] <= results["ci_high"])).all()
    assert results["estimate"].is_between(0, 1).all()
    covered = results.with_columns(hit=(pl.col("ci_low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("ci_high")))
    by_method = dict(covered.group_by("method").agg(pl.col("hit").mean()).iter_rows())
    for method in ("hajek", "horvitz_thompson", "ppi"):
        assert 0.88 <= by_method[method] <= 0.995, (method, by_method[method])
    assert by_method["naive_thumbs"] < 0.2  # thumbs are a biased signal: the point of the table
    overall = covered.filter(pl.col("metric") == "failure_rate")
    bias = dict(overall.group_by("method").agg((pl.col("estimate") - pl.col("truth")).mean()).iter_rows())
    assert abs(bias["hajek"]) < 0.01 and abs(bias["ppi"]) < 0.01
    assert bias["naive_sample"] > naive_bias  # the oversampled queue, unweighted, overstates failures


def test_ppi_never_gives_a_wider_interval_than_hajek():
    """A weak judge and few failures among the labels: the judge's margin would only add
    width, so λ = 0 and the PPI interval is the Hájek one; with a good judge PPI keeps its gain."""
    rng = np.random.default_rng(3)
    n = 2000
    rare = np.where(rng.random(n) < 0.03, "fail", "pass").tolist()
    common = np.where(rng.random(n) < 0.2, "fail", "pass").tolist()
    weak = np.where(rng.random(n) < 0.5, "fail", "pass").tolist()  # unrelated to the truth
    for truth, judge, gains in ((rare, weak, False), (common, common, True)):
        pop = population({"unrated": n}, judge=judge)
        lab = labels(pop, {"unrated": truth[:80]})
        out = estimate_quality(pop, lab, ["other"])
        ppi, hajek = row(out, "ppi"), row(out, "hajek")
        width = ppi["ci_high"] - ppi["ci_low"]
        assert width <= hajek["ci_high"] - hajek["ci_low"] + 1e-12
        if gains:
            assert width < hajek["ci_high"] - hajek["ci_low"] and "lambda=0.000" not in ppi["notes"]
        else:
            assert (ppi["ci_low"], ppi["ci_high"]) == pytest.approx((hajek["ci_low"], hajek["ci_high"]))
            assert "lambda=0.000" in ppi["notes"]
