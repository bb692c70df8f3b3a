from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from statsmodels.stats.proportion import proportion_confint

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.impact.loop_health import LoopHealthConfig, loop_health
from feedback_pipeline.impact.schemas import LoopHealth

LOOP_HEALTH_SCHEMA = polars_schema(LoopHealth)

W0 = date(2026, 1, 5)  # a Monday
INTENTS = ("refund_status", "order_status", "cancel", "address_change")


def weeks(n: int) -> list[date]:
    return [W0 + timedelta(weeks=i) for i in range(n)]


def mix(n_weeks: int, shares_by_week=None, agent: str = "refunds", total: int = 2000) -> pl.DataFrame:
    """Per week/intent/channel counts; shares_by_week[i] = intent shares of week i (default: even)."""
    rows = []
    for i, w in enumerate(weeks(n_weeks)):
        shares = (shares_by_week or {}).get(i, [0.25] * 4)
        for intent, share in zip(INTENTS, shares):
            for channel, c_share in (("web", 0.7), ("app", 0.3)):
                n = int(round(total * share * c_share))
                rows.append({"week": w, "agent_id": agent, "intent": intent, "channel": channel,
                             "n_traces": n, "n_rated": n // 20})
    return pl.DataFrame(rows)


def snapshots(pass_rates: list[float | None], sizes: list[int] | None = None, agent: str = "refunds") -> pl.DataFrame:
    """One snapshot per week (None: no snapshot); test cases pass at the given rate."""
    sizes = sizes or [100] * len(pass_rates)
    cats = ("could_not_answer", "tone_wrong", "tool_failed")
    rows = []
    for w, rate, size in zip(weeks(len(pass_rates)), pass_rates, sizes):
        if rate is None:
            continue
        n_test = size * 4 // 5
        for j in range(size):
            test = j < n_test
            ok = (j < round(rate * n_test)) if test else j % 2 == 0
            rows.append({"snapshot_id": f"{agent}@{w}", "agent_id": agent, "week": w, "case_id": f"k{j}",
                         "split": "test" if test else "dev", "verdict": "pass" if ok else "fail",
                         "failure_category": None if ok else cats[j % 3]})
    return pl.DataFrame(rows, schema={"snapshot_id": pl.String, "agent_id": pl.String, "week": pl.Date,
                                      "case_id": pl.String, "split": pl.String, "verdict": pl.String,
                                      "failure_category": pl.String})


def run(pass_rates, sizes=None, mix_frame=None, **config) -> pl.DataFrame:
    n = len(pass_rates)
    return loop_health(mix_frame if mix_frame is not None else mix(n), None, snapshots(pass_rates, sizes),
                       None, None, LoopHealthConfig(**config))


def test_stalled_pass_rate_flagged_after_four_weeks_without_a_new_high():
    out = run([0.50, 0.60, 0.70, 0.70, 0.65, 0.70, 0.70, 0.70], sizes=[125 + 25 * i for i in range(8)])
    assert out.schema == pl.Schema(LOOP_HEALTH_SCHEMA)
    assert out["weeks_since_improvement"].to_list() == [0, 0, 0, 1, 2, 3, 4, 5]
    assert out["pass_rate_stalled"].to_list() == [False] * 6 + [True, True]
    assert "pass_rate_stalled: not above 0.7 for 4 weeks" in out["flags"][6]
    assert out["flags"][:6].null_count() == 6  # the set grows, the mix is stable: nothing else


def test_rising_pass_rate_is_not_stalled_and_min_improvement_is_respected():
    rising = [0.50, 0.52, 0.55, 0.57, 0.60, 0.62, 0.65, 0.70]
    out = run(rising, sizes=[125] * 8)  # 100 test cases
    assert not out["pass_rate_stalled"].any()
    assert out["weeks_since_improvement"].max() == 0
    assert out["pass_rate_high"].to_list() == [None, *rising[:-1]]
    # demanding more than +5 points over the last counted high: small steps add up until they count
    strict = run(rising, sizes=[125] * 8, min_improvement=0.05)
    assert strict["weeks_since_improvement"].to_list() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert strict["pass_rate_high"].to_list() == [None, 0.50, 0.50, 0.50, 0.57, 0.57, 0.57, 0.65]
    assert not strict["pass_rate_stalled"].any()
    assert run(rising, sizes=[125] * 8, min_improvement=0.25)["pass_rate_stalled"].to_list() == [False] * 4 + [True] * 4


def test_weeks_without_snapshot_count_as_not_improved():
    out = run([0.6, None, None, None, None])
    assert out.height == 5 and out["pass_rate"].null_count() == 4
    assert out["pass_rate_stalled"].to_list() == [False] * 4 + [True]


def test_pass_rate_has_a_wilson_interval():
    out = run([0.55])
    n, k = out["test_cases"][0], out["test_passed"][0]
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (n, k) == (80, 44) and out["pass_rate"][0] == pytest.approx(0.55)
    assert out["pass_rate_ci_low"][0] == pytest.approx(low) and out["pass_rate_ci_high"][0] == pytest.approx(high)


def test_eval_set_stalled_when_size_does_not_grow():
    out = run([0.5 + 0.05 * i for i in range(6)], sizes=[50, 75, 100, 100, 90, 125])
    assert out["eval_set_stalled"].to_list() == [False, False, False, True, True, False]
    assert out["flags"][3] == "eval_set_stalled: 100 cases, was 100"
    capped = run([0.5 + 0.05 * i for i in range(4)], sizes=[50, 100, 100, 100], max_cases=100)
    assert not capped["eval_set_stalled"].any()


def test_eval_set_without_snapshot_this_week_is_stalled():
    out = run([0.5, 0.6, None], sizes=[50, 75, 0], mix_frame=mix(3))
    assert out["eval_set_stalled"].to_list() == [False, False, True]


def test_input_drift_flagged_on_planted_intent_shift_not_on_stable_mix():
    rng = np.random.default_rng(7)
    stable = {i: list(rng.dirichlet([400] * 4)) for i in range(6)}  # small week-to-week noise
    shifted = {**stable, 4: [0.70, 0.10, 0.10, 0.10]}
    out_stable = loop_health(mix(6, stable), None, snapshots([0.5] * 6), None, None)
    out_shift = loop_health(mix(6, shifted), None, snapshots([0.5] * 6), None, None)
    assert out_stable["intent_psi"][0] is None  # no previous week
    assert out_stable["intent_psi"].drop_nulls().max() < 0.05
    assert not out_stable["input_drift"].any()
    # the shift shows in week 4 (vs 3) and back in week 5 (vs 4)
    assert out_shift["input_drift"].to_list() == [False, False, False, False, True, True]
    assert out_shift["intent_psi"][4] > 0.25 and out_shift["channel_psi"][4] < 0.01
    assert "input_drift: intent PSI" in out_shift["flags"][4]


def test_channel_drift_alone_is_flagged():
    base = mix(2)
    moved = base.with_columns(n_traces=pl.when((pl.col("week") == W0 + timedelta(weeks=1))
                                               & (pl.col("channel") == "app")).then(pl.col("n_traces") * 10)
                              .otherwise("n_traces"))
    out = loop_health(moved, None, snapshots([0.5, 0.6]), None, None)
    assert out["input_drift"].to_list() == [False, True]
    assert out["channel_psi"][1] > 0.25


def test_throughput_kappa_share_rated_coverage_and_failure_rate():
    labels = pl.DataFrame({
        "agent_id": ["refunds"] * 5 + [None],
        "imported_at": [datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc), datetime(2026, 1, 11, 23, tzinfo=timezone.utc),
                        datetime(2026, 1, 12, 8, tzinfo=timezone.utc), datetime(2026, 1, 13, tzinfo=timezone.utc),
                        datetime(2026, 2, 3, tzinfo=timezone.utc), datetime(2026, 1, 6, tzinfo=timezone.utc)],
    })
    calibration = pl.DataFrame({"month": ["2026-01", "2026-01", "2026-02"], "rubric_version": ["v1", "v2", "v2"],
                                "cohens_kappa": [0.6, 0.9, 0.5], "n_compared": [100, 50, 80]})
    estimates = pl.DataFrame({
        "week": [W0, W0], "agent_id": ["refunds", "refunds"], "metric": ["failure_rate", "failure_rate"],
        "method": ["hajek", "naive_thumbs"], "estimate": [0.12, 0.40], "ci_low": [0.08, 0.3], "ci_high": [0.17, 0.5]})
    out = loop_health(mix(5), estimates, snapshots([0.5] * 5), labels, calibration)
    assert out["labels_imported"].to_list() == [2, 2, 0, 0, 1]
    assert out["judge_kappa"].to_list()[:4] == pytest.approx([0.7] * 4)  # (0.6·100 + 0.9·50) / 150
    assert out["judge_kappa"][4] == pytest.approx(0.5)
    assert out["share_rated"][0] == pytest.approx(0.05, abs=0.005)
    assert out["category_coverage"][0] == pytest.approx(3 / 6)
    assert out["categories_missing"][0] == "other, policy_violation, wrong_information"
    assert (out["failure_rate"][0], out["failure_rate_ci_low"][0]) == (0.12, 0.08)
    assert out["failure_rate"][1:].null_count() == 4


def test_two_agents_are_independent_and_empty_inputs_give_an_empty_frame():
    both = pl.concat([mix(3), mix(3, agent="billing")])
    snaps = pl.concat([snapshots([0.5, 0.5, 0.5]), snapshots([0.5, 0.6, 0.7], agent="billing")])
    out = loop_health(both, None, snaps, None, None)
    assert out.height == 6 and out.filter(pl.col("agent_id") == "billing")["weeks_since_improvement"].max() == 0
    assert out.filter(pl.col("agent_id") == "refunds")["weeks_since_improvement"].to_list() == [0, 1, 2]
    empty = loop_health(mix(1).clear(), None, snapshots([]), None, None)
    assert empty.is_empty() and empty.schema == pl.Schema(LOOP_HEALTH_SCHEMA)


def test_cross_week_inputs_load_on_a_fresh_home_with_labels_but_no_scores():
    """Automation can run the cross-week tables as soon as escalation labels exist, before any
    week is scored or queued: their inputs then read as absent, not as a DuckDB error."""
    import duckdb

    from feedback_pipeline.impact import load

    con = duckdb.connect()
    con.execute("CREATE TABLE human_labels (trace_id VARCHAR, source VARCHAR, imported_at TIMESTAMPTZ, "
                "labeled_at TIMESTAMPTZ, is_current BOOLEAN)")
    inputs = load.loop_inputs(con)
    assert inputs["labels"] is None and inputs["estimates"] is None
    assert load.labeled_sample(con) is None
