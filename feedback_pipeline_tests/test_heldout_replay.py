"""The held-out pass rate by replay: its statistics against a simulation with known truth, the
`heldout_replay` asset and `loop_health` through Dagster (real assets and checks, a temporary
home, the loopback agent and judge of `test_replay`), an endpoint failing some cases (per-case
errors and a WARN, never a silent pass), and the demo agent's planted versions.
"""

from datetime import date, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, default_resources
from feedback_pipeline.evalset.schemas import EvalSetSnapshots
from feedback_pipeline.frames import conform
from feedback_pipeline.impact.heldout_stats import pass_rate_change, pass_rate_ci
from feedback_pipeline.impact.loop_health import loop_health
from feedback_pipeline.warehouse import replace_table
from feedback_pipeline_tests.test_impact_replay_dagster import scores
from feedback_pipeline_tests.test_replay import ContentJudge, FakeAgent, answers_well, cases

WEEK = date(2026, 1, 26)  # p1 live; p2 the week after (test_impact_replay_dagster.scores)
NEXT = WEEK + timedelta(weeks=1)
REPLAY = dg.AssetSelection.assets("heldout_replay", "loop_health")


# -- the statistics against known truth -----------------------------------------------------

def clustered_sample(rng, p: float, n_conv: int, sigma: float = 1.2):
    """Cases in conversations of 1-4 cases sharing a random effect; returns (passed, clusters, true rate)."""
    sizes = rng.integers(1, 5, n_conv)
    conv = np.repeat(np.arange(n_conv), sizes)
    logit = np.log(p / (1 - p)) + sigma * rng.standard_normal(n_conv)[conv]
    u = rng.random(len(conv))
    return u < 1 / (1 + np.exp(-logit)), conv, logit, u


def true_rate(p: float, sigma: float = 1.2) -> float:
    z = np.random.default_rng(0).standard_normal(400_000)
    return float(np.mean(1 / (1 + np.exp(-(np.log(p / (1 - p)) + sigma * z)))))


def test_clustered_pass_rate_ci_covers_the_truth_about_95_percent():
    truth, seeds = true_rate(0.8), 300
    covered = naive_covered = 0
    for seed in range(seeds):
        passed, conv, *_ = clustered_sample(np.random.default_rng(seed), 0.8, 60)
        _, low, high = pass_rate_ci(passed, conv)
        covered += low <= truth <= high
        _, nlow, nhigh = pass_rate_ci(passed, None)
        naive_covered += nlow <= truth <= nhigh
    assert 0.91 <= covered / seeds <= 0.99, covered / seeds
    assert naive_covered < covered  # ignoring the clusters is overconfident


def test_plain_wilson_when_every_case_is_its_own_conversation():
    from statsmodels.stats.proportion import proportion_confint

    passed = np.array([True] * 44 + [False] * 36)
    assert pass_rate_ci(passed, list(range(80)))[1:] == pytest.approx(proportion_confint(44, 80, method="wilson"))
    assert pass_rate_ci([], None) == (None, None, None)


def test_month_over_month_change_ci_covers_a_planted_change_on_overlapping_sets():
    """A month later the set has grown (60 conversations kept, 30 new) and the agent's
    failure log-odds dropped by 0.5: the same cases are re-answered by the new version."""
    shift, seeds, covered, found = 0.5, 200, 0, 0
    z = np.random.default_rng(1).standard_normal(400_000)
    base = np.log(0.8 / 0.2) + 1.2 * z
    truth = float(np.mean(1 / (1 + np.exp(-(base + shift)))) - np.mean(1 / (1 + np.exp(-base))))
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        before, conv, logit, u = clustered_sample(rng, 0.8, 90)
        kept = conv < 60
        now = u < 1 / (1 + np.exp(-(logit + shift)))  # same case, same draw: a paired re-answer
        effect, low, high = pass_rate_change(now, conv, before[kept], conv[kept])
        covered += low <= truth <= high
        found += low > 0
    assert 0.90 <= covered / seeds <= 0.99, covered / seeds
    assert found / seeds > 0.5  # the pairing gives the climb a fair chance to show


def replay_frame(weeks: list[date], rates: list[float], n: int = 200) -> pl.DataFrame:
    rows = []
    for w, rate in zip(weeks, rates):
        rows += [{"week": w, "agent_id": "refunds", "case_id": f"k{i}", "conversation_id": f"c{i}",
                  "verdict": "pass" if i < rate * n else "fail", "error": None} for i in range(n)]
    return pl.DataFrame(rows, schema_overrides={"verdict": pl.String, "error": pl.String})


def test_loop_health_uses_the_replay_and_decides_stalled_on_the_month_over_month_change():
    weeks = [WEEK + timedelta(weeks=k) for k in range(6)]
    snaps = pl.DataFrame({"agent_id": "refunds", "week": weeks, "split": "test", "verdict": "fail",
                          "failure_category": None}, schema_overrides={"failure_category": pl.String})
    mix = pl.DataFrame({"week": weeks, "agent_id": "refunds", "intent": "x", "channel": "web", "n_traces": 100,
                        "n_rated": 10})
    replay = replay_frame(weeks[:5], [0.70, 0.70, 0.70, 0.70, 0.85])  # week 5: no replay
    out = loop_health(mix, None, snaps, None, None, replay=replay).sort("week")
    assert out["pass_rate_source"].to_list() == ["replay"] * 5 + ["logged_answers"]
    assert out["pass_rate"].to_list()[:5] == pytest.approx([0.70] * 4 + [0.85])
    assert out["pass_rate"][5] == 0.0  # the logged answers' gold verdicts, labelled as such
    change = out.row(4, named=True)
    assert change["pass_rate_mom_change"] == pytest.approx(0.15) and change["pass_rate_mom_ci_low"] > 0
    assert not change["pass_rate_stalled"]
    flat = loop_health(mix, None, snaps, None, None, replay=replay_frame(weeks[:5], [0.7] * 5)).sort("week")
    assert flat["pass_rate_stalled"].to_list()[:5] == [False] * 4 + [True]
    assert "replay pass rate 0.7 vs 4 weeks ago: 0.0" in flat["flags"][4]


# -- through Dagster ------------------------------------------------------------------------

def snapshot_rows() -> pl.DataFrame:
    """refunds' grow-only snapshots: 30 test cases in WEEK, 60 in NEXT (each with 4 dev cases, canaries)."""
    parts = []
    for week, n in ((WEEK, 30), (NEXT, 60)):
        frame = cases(n).filter(pl.col("case_id") != "old0").with_columns(
            week=pl.lit(week), snapshot_id=pl.lit(f"refunds@{week}"))
        parts.append(frame)
    frame = pl.concat(parts).with_columns(
        trace_id=pl.col("case_id"), conversation_id=pl.format("conv{}", pl.col("case_id").str.slice(1).cast(pl.Int64) // 2),
        turn_index=pl.lit(0), first_seen_week=pl.lit(WEEK), rubric_version=pl.lit("v1"), source=pl.lit("annotation"),
        agent_response=pl.lit("(the production answer)"))
    return conform(frame, EvalSetSnapshots)


def materialize(tmp_path, models: dict[str, str]):
    from feedback_pipeline.impact.agent import AgentReplayResource
    from feedback_pipeline.resources import FeedbackHome
    from feedback_pipeline.scoring.judge import JudgeResource

    home = FeedbackHome(path=str(tmp_path / "home"))
    with home.warehouse() as con:
        replace_table(con, "automated_scores", scores())
        replace_table(con, "eval_set_snapshots", snapshot_rows())
    results = []
    with FakeAgent() as agent_server, ContentJudge() as judge_server:
        resources = {**default_resources(), "home": home,
                     "judge": JudgeResource(base_url=judge_server.url, model="fake-judge-1", timeout_s=5, max_retries=1),
                     "agent": AgentReplayResource(base_url=agent_server.url, models=models, max_retries=0, timeout_s=5)}
        for week in (str(WEEK), str(NEXT)):
            results.append(dg.materialize(ASSETS + ASSET_CHECKS, selection=dg.AssetSelection.assets("heldout_replay"),
                                          partition_key=week, resources=resources, raise_on_error=False))
        calls = agent_server.call_count
        again = dg.materialize(ASSETS + ASSET_CHECKS, selection=dg.AssetSelection.assets("heldout_replay"),
                               partition_key=str(NEXT), resources=resources, raise_on_error=False)
        assert again.success
        results.append(again)
        asked_again = agent_server.call_count - calls  # answers are cached: a re-run asks only what failed
        results.append(dg.materialize(ASSETS + ASSET_CHECKS, selection=dg.AssetSelection.assets("loop_health"),
                                      resources=resources, raise_on_error=False))
    with home.warehouse() as con:
        return (results, asked_again, con.execute("SELECT * FROM heldout_replay").pl(),
                con.execute("SELECT * FROM loop_health").pl())


def checks(results) -> dict[tuple[str, str], bool]:
    """(asset, check) -> passed, over the runs given."""
    return {(e.asset_key.to_user_string(), e.check_name): e.passed
            for r in results for e in r.get_asset_check_evaluations()}


def test_weekly_replay_and_loop_health_through_dagster_with_every_check_passing(tmp_path):
    models = {"p1|r1|m1": "agent-old", "p2|r1|m1": "agent-new"}
    results, asked_again, replay, health = materialize(tmp_path, models)
    assert all(r.success for r in results) and asked_again == 0
    evaluations = checks(results)
    assert evaluations and all(evaluations.values()), evaluations
    assert set(evaluations) >= {("heldout_replay", "schema_matches"),
                                                   ("heldout_replay", "every_case_graded"),
                                                   ("loop_health", "schema_matches")}
    # Test split + canary (2 dev canaries) per week; each week answered by its live version.
    assert replay.group_by("week").len().sort("week")["len"].to_list() == [32, 62]
    assert replay.filter(pl.col("week") == WEEK)["model"].unique().to_list() == ["agent-old"]
    assert replay.filter(pl.col("week") == NEXT)["model"].unique().to_list() == ["agent-new"]
    assert replay["error"].null_count() == replay.height
    for week, model in ((WEEK, "agent-old"), (NEXT, "agent-new")):
        rows = replay.filter(pl.col("week") == week)
        expected = np.mean([answers_well(model, int(c[1:])) for c in rows["case_id"]])
        judged = (rows["verdict"] == "pass").mean()
        assert abs(judged - expected) < 0.12  # the demo judge's noise only
        got = health.filter(pl.col("week") == week).row(0, named=True)
        assert got["pass_rate_source"] == "replay" and got["pass_rate"] == pytest.approx(judged)
        assert got["pass_rate_ci_low"] < judged < got["pass_rate_ci_high"] and got["replay_errors"] == 0


def test_an_endpoint_failing_some_cases_gives_per_case_errors_and_a_warn(tmp_path):
    models = {"p1|r1|m1": "agent-old", "p2|r1|m1": "agent-flaky"}
    results, asked_again, replay, health = materialize(tmp_path, models)
    assert all(r.success for r in results)
    assert checks(results[:1]) == {("heldout_replay", "schema_matches"): True,
                                   ("heldout_replay", "every_case_graded"): True}  # WEEK: agent-old, no fault
    assert checks(results[1:2]) == {("heldout_replay", "schema_matches"): True,  # NEXT: the run goes on, WARN
                                    ("heldout_replay", "every_case_graded"): False}
    warn = [e for e in results[1].get_asset_check_evaluations() if e.check_name == "every_case_graded"]
    assert warn[0].severity == dg.AssetCheckSeverity.WARN and warn[0].metadata["errors"].value > 0
    failed = replay.filter(pl.col("error").is_not_null())
    assert sorted(failed["case_id"]) == sorted(c for c in replay.filter(pl.col("week") == NEXT)["case_id"]
                                               if int(c[1:]) % 10 == 0)
    assert failed["verdict"].null_count() == failed.height and failed["error"].str.contains("HTTP 500").all()
    assert asked_again == failed.height  # failures are not cached: the re-run asks them again
    got = health.filter(pl.col("week") == NEXT).row(0, named=True)
    assert got["replay_errors"] == failed.height and got["test_cases"] == 62 - failed.height


# -- the demo agent ---------------------------------------------------------------------------

def test_the_demo_agent_answers_as_each_planted_version():
    from feedback_pipeline.demo.fake_agent import case_outcome, resolve, world_states

    states = world_states()
    cases_ = [[{"role": "user", "content": f"question {i}"}] for i in range(4000)]

    def pass_rate(model):
        rates = resolve(model, states)
        return np.mean([case_outcome(m, rates) is None for m in cases_])

    dental = [pass_rate(f"dental_front_desk/{v}") for v in ("dental-v3", "dental-v4")]
    refunds = [pass_rate(f"refunds/{v}") for v in ("refunds-kb-v5", "refunds-kb-v6")]
    assert dental[0] == pytest.approx(0.82, abs=0.02) and dental[1] == pytest.approx(0.89, abs=0.02)
    assert refunds[0] == pytest.approx(0.88, abs=0.02) and refunds[1] == pytest.approx(0.83, abs=0.02)
    aa = [pass_rate(f"dental_front_desk/{v}") for v in ("llm-large-2026-07", "llm-large-2026-07-r2")]
    assert aa[0] == aa[1]  # the A/A redeploy changes nothing, case by case
    assert resolve("refunds/refunds-v12|refunds-kb-v6|llm-medium-2026-06", states) == resolve("refunds/refunds-kb-v6",
                                                                                              states)
    assert resolve("nobody/v1", states) is None
