"""Labels worth their cost: interval widths of each queue design against a proportional sample of the same budget.

Run: `.venv/bin/python benchmarks/label_efficiency.py --seeds 300 [--workers 2]`.

Each seed simulates one agent-week per agent of three worlds with a known truth
(every trace's true verdict and category) and draws the queue with each design
(`fixed`: the weights used before issue #17; `proportional` ≈ a uniform random
sample; `optimal`: the compromise Neyman allocation of `sampling.optimal`), with
and without a judge, at the same budget. Annotators label the whole queue (exact,
in the simulation); `estimates.estimators` estimates (Hájek without a judge, PPI
and Hájek with one).

Printed per world, judge and design: the mean 95 % CI width of the failure rate and
of each category rate as a ratio to `proportional` (same world, judge, method),
the coverage of every interval, human-verified failures in the queue per
agent-week, escalation labels per agent-week (labels the team already has), and
the eval set's new failures (queue failures ∪ escalation labels), and on the queue's
escalation-labeled items (the audit slice) how often the escalation label agrees with
the human one.

The worlds:
- `demo`: like the demo's (agents at 10 % and 22 % failure, thumbs on ~5 % of turns
  skewed to failures, escalations ~3 % with a reason; judge ~90 % agreement,
  lenient on tone).
- `rare_failures`: 3 % and 6 % failure, thumbs and escalations half as often, a
  strong judge (~97 %).
- `noisy_feedback`: 25 % and 40 % failure, thumbs three times as often with many
  trolls, escalations twice as often, a weak judge (~80 %).
"""

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.coverage import scores_frame  # noqa: E402
from feedback_pipeline.estimates.estimators import estimate_quality  # noqa: E402
from feedback_pipeline.rubrics import failure_categories  # noqa: E402
from feedback_pipeline.sampling.allocation import SamplingConfig  # noqa: E402
from feedback_pipeline.sampling.design import sample_week  # noqa: E402
from feedback_pipeline.sampling.priors import stratum_failure_rates  # noqa: E402

WEEK = date(2026, 11, 16)
CATEGORIES = failure_categories("v1")
# `optimal` learns stratum rates from last week's labels (its steady state);
# `optimal_cold` is its first week, kind priors only. `uniform`: a simple random sample.
DESIGNS = ("fixed", "proportional", "optimal", "optimal_cold", "uniform")
BUDGET = 150
REASONS = ("agent_could_not_answer", "tone_wrong", "tool_failed", "wrong_information",
           "policy_violation", "user_requested_human", "other")
REASON_OF = {c: ("agent_could_not_answer" if c == "could_not_answer" else c) for c in CATEGORIES}


@dataclass(frozen=True)
class World:
    name: str
    agents: tuple[tuple[str, int, float], ...]  # (agent_id, turns per week, true failure rate)
    category_mix: tuple[float, ...]  # share of failures in each of CATEGORIES
    rating: float = 1.0  # scale of the thumbs propensity
    trolls: float = 0.5  # share of heavy clickers who thumb down whatever they see
    escalation: float = 1.0  # scale of the escalation probability
    judge_sensitivity: tuple[float, ...] = (0.85, 0.8, 0.3, 0.9, 0.85, 0.6)  # per category
    judge_false_fail: float = 0.05


WORLDS: dict[str, World] = {w.name: w for w in (
    World("demo", (("agent_a", 4000, 0.10), ("agent_b", 1500, 0.22)),
          (.05 / .18, .04 / .18, .03 / .18, .03 / .18, .005 / .18, .025 / .18)),
    World("rare_failures", (("agent_a", 6000, 0.03), ("agent_b", 3000, 0.06)),
          (0.3, 0.3, 0.1, 0.15, 0.05, 0.1), rating=0.5, escalation=0.5,
          judge_sensitivity=(0.9,) * 6, judge_false_fail=0.02),
    World("noisy_feedback", (("agent_a", 2000, 0.25), ("agent_b", 1000, 0.40)),
          (0.25, 0.3, 0.15, 0.15, 0.05, 0.1), rating=3.0, trolls=0.8, escalation=2.0,
          judge_sensitivity=(0.75, 0.7, 0.5, 0.8, 0.7, 0.5), judge_false_fail=0.12),
)}


def simulate_world(world: World, seed: int, judge: bool = True) -> pl.DataFrame:
    """An `automated_scores`-shaped frame of one week plus the truth (`true_verdict`, `true_category`)."""
    rng = np.random.default_rng(seed)
    parts = [_agent(rng, world, agent, n, rate) for agent, n, rate in world.agents]
    scores = pl.concat(parts)
    if not judge:
        scores = scores.with_columns(judge_verdict=pl.lit(None, pl.String), judge_failure_category=pl.lit(None, pl.String),
                                     judge_error=pl.lit(None, pl.String), judge_selection_prob=pl.lit(None, pl.Float64))
    return scores


def _agent(rng: np.random.Generator, world: World, agent: str, n: int, rate: float) -> pl.DataFrame:
    n_users = max(n // 4, 30)
    popularity = 1 / np.arange(1, n_users + 1) ** 0.8
    user_idx = rng.choice(n_users, size=n, p=popularity / popularity.sum())
    users = np.array([f"{agent}-u{i}" for i in range(n_users)], dtype=object)[user_idx]
    users[rng.random(n) < 0.03] = None
    heavy_ids = np.array([4, 7, 11, 15, 20, 26, 33, 41])
    heavy = np.isin(user_idx, heavy_ids)
    troll = np.isin(user_idx, heavy_ids[: int(round(world.trolls * len(heavy_ids)))])
    k = len(CATEGORIES)
    probs = np.array(world.category_mix) * rate
    draw = rng.choice(k + 1, size=n, p=[*probs, 1 - probs.sum()])
    fail = draw < k
    cat_idx = np.minimum(draw, k - 1)
    category = np.array([*CATEGORIES, None], dtype=object)[draw]

    p_rated = world.rating * np.where(fail, 0.18, 0.015)
    rated = rng.random(n) < np.minimum(np.where(heavy, 0.7, p_rated), 0.95)
    down = np.where(troll, rng.random(n) < 0.9, rng.random(n) < np.where(fail, 0.88, 0.12))
    thumbs = np.where(rated, np.where(down, "down", "up"), None)

    p_esc = world.escalation * np.where(fail, np.array([.20, .10, .14, .25, .30, .08])[cat_idx], 0.008)
    escalated = rng.random(n) < np.minimum(p_esc, 0.95)
    u = rng.random(n)
    matching = np.array([REASON_OF[c] for c in CATEGORIES], dtype=object)[cat_idx]
    reason = np.where(fail, np.where(u < 0.8, matching, np.where(u < 0.94, "user_requested_human", "other")),
                      np.where(u < 0.8, "user_requested_human", "other"))
    reason = np.where(escalated, reason, None)
    rewrote = rng.random(n) < np.where(fail, 0.3, 0.05)
    det_low = rng.random(n) < np.select([category == "tool_failed", category == "could_not_answer", fail],
                                        [0.6, 0.4, 0.05], 0.03)

    sensitivity = np.array(world.judge_sensitivity)[cat_idx]
    judge_fail = rng.random(n) < np.where(fail, sensitivity, world.judge_false_fail)
    right_cat = rng.random(n) < 0.8
    wrong_cat = np.array(CATEGORIES, dtype=object)[rng.integers(k, size=n)]
    judge_cat = np.where(judge_fail, np.where(fail & right_cat, category, wrong_cat), None)
    errored = rng.random(n) < 0.02
    return scores_frame(agent, WEEK, users, thumbs, escalated, reason, rewrote, det_low,
                        judge_fail, judge_cat, errored, fail, category)


def truth_rates(scores: pl.DataFrame) -> pl.DataFrame:
    """The finite-population truth per agent and metric."""
    exprs = [(pl.col("true_verdict") == "fail").mean().alias("failure_rate")]
    exprs += [(pl.col("true_category") == c).fill_null(False).mean().alias(f"failure_rate:{c}") for c in CATEGORIES]
    return scores.group_by("agent_id").agg(exprs).unpivot(index="agent_id", variable_name="metric", value_name="truth")


def label_all(queue: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Every queue row with its true label (annotators finish the queue)."""
    truth = scores.select("trace_id", verdict="true_verdict", failure_category="true_category")
    return queue.select("trace_id", "agent_id", "stratum", "inclusion_prob", "stratum_population",
                        "stratum_sample_size", "queue_position", "escalation_reason").join(truth, on="trace_id")


def queue_yield(labeled: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Per agent: human-verified failures in the queue; escalation labels of the week (escalated
    with a reason other than user_requested_human: `labels.escalations` makes each a fail label);
    the eval set's new failures (the union of both); and on the queue's escalation-labeled
    items (the audit slice), how often the label's verdict and category are right."""
    esc = pl.col("escalation_reason").is_not_null() & (pl.col("escalation_reason") != "user_requested_human")
    category_of = {r: ("could_not_answer" if r == "agent_could_not_answer" else r) for r in REASONS}
    right_category = pl.col("escalation_reason").replace_strict(category_of, default="other") == pl.col("failure_category")
    queued = labeled.group_by("agent_id").agg(
        failures=(pl.col("verdict") == "fail").sum(),
        failures_not_escalation_labeled=((pl.col("verdict") == "fail") & ~esc).sum(),
        audited=esc.sum(),
        audit_verdict_right=(esc & (pl.col("verdict") == "fail")).sum(),
        audit_category_right=(esc & right_category.fill_null(False)).sum(),
    )
    escalations = scores.group_by("agent_id").agg(escalation_labels=esc.sum())
    return queued.join(escalations, on="agent_id").with_columns(
        eval_set_failures=pl.col("failures_not_escalation_labeled") + pl.col("escalation_labels"))


def draw(world: World, scores: pl.DataFrame, design: str, seed: int, judge: bool,
         budget: int = BUDGET) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(population as the estimator sees it, the labeled queue) of one design."""
    if design == "uniform":
        return uniform_sample(scores, budget, seed)
    config = SamplingConfig(budget=budget, allocation=design.removesuffix("_cold"), seed=seed, categories=CATEGORIES)
    prior = None
    if design == "optimal":  # last week: other traffic, drawn by the cold design, labeled
        last = simulate_world(world, seed + 100_000, judge)
        prior = stratum_failure_rates(label_all(sample_week(last, config), last))
    return scores, label_all(sample_week(scores, config, prior), scores)


def uniform_sample(scores: pl.DataFrame, budget: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A simple random sample of `budget` traces per agent, as one stratum `all`."""
    rng = np.random.default_rng(seed + 20_000)
    size = pl.min_horizontal(pl.lit(budget), pl.len().over("agent_id"))
    population = scores.with_columns(stratum=pl.lit("all"), _u=pl.Series(rng.random(scores.height))).with_columns(
        inclusion_prob=size / pl.len().over("agent_id"), stratum_population=pl.len().over("agent_id"),
        stratum_sample_size=size.cast(pl.Int64), queue_position=pl.col("_u").rank("ordinal").over("agent_id"))
    queue = population.filter(pl.col("queue_position") <= size)
    return population.drop("_u"), label_all(queue, scores)


def run_seed(seed: int, worlds: tuple[str, ...] = tuple(WORLDS), designs: tuple[str, ...] = DESIGNS,
             budget: int = BUDGET) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(interval rows with the truth, queue yield rows) of one seed, every world, judge and design."""
    rows, yields = [], []
    for name in worlds:
        for judge in (True, False):
            scores = simulate_world(WORLDS[name], seed, judge)
            truth = truth_rates(scores)
            for design in designs:
                population, labeled = draw(WORLDS[name], scores, design, seed, judge, budget)
                tag = dict(world=pl.lit(name), judge=pl.lit(judge), design=pl.lit(design), seed=pl.lit(seed))
                estimates = estimate_quality(population, labeled, CATEGORIES).filter(
                    pl.col("method").is_in(["hajek", "ppi"]) & pl.col("estimate").is_not_null())
                rows.append(estimates.join(truth, on=["agent_id", "metric"]).select(
                    "agent_id", "metric", "method", "estimate", "ci_low", "ci_high", "truth").with_columns(**tag))
                yields.append(queue_yield(labeled, scores).with_columns(**tag))
    return pl.concat(rows), pl.concat(yields)


def summarise(results: pl.DataFrame) -> pl.DataFrame:
    """Coverage and mean width per world, judge, design, method, metric, with the width ratio to proportional."""
    table = results.group_by("world", "judge", "design", "method", "metric").agg(
        coverage=((pl.col("ci_low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("ci_high"))).mean(),
        width=(pl.col("ci_high") - pl.col("ci_low")).mean(),
        n=pl.len(),
    )
    base = table.filter(pl.col("design") == "proportional").select(
        "world", "judge", "method", "metric", base_width="width")
    return table.join(base, on=["world", "judge", "method", "metric"]).with_columns(
        ratio=pl.col("width") / pl.col("base_width")).drop("base_width").sort("world", "judge", "design", "method", "metric")


def headline(table: pl.DataFrame, yields: pl.DataFrame) -> pl.DataFrame:
    """One row per world, judge and design: the figures #17 sets floors on.

    Method: PPI with a judge, Hájek without. `fail_ratio`: failure-rate width / proportional;
    `worst_category_ratio`: the largest category ratio; coverage range over every metric;
    `fail_vs_uniform_humans`: failure-rate width / a simple random sample's, humans only (Hájek);
    per agent-week: human-verified failures in the queue, escalation labels, the eval set's new
    failures (their union) and the audited escalation labels, with how often their verdict and
    category agree with the human label.
    """
    main = table.filter(pl.when(pl.col("judge")).then(pl.col("method") == "ppi").otherwise(pl.col("method") == "hajek"))
    figures = main.group_by("world", "judge", "design").agg(
        fail_ratio=pl.col("ratio").filter(pl.col("metric") == "failure_rate").first(),
        worst_category_ratio=pl.col("ratio").filter(pl.col("metric") != "failure_rate").max(),
        fail_width=pl.col("width").filter(pl.col("metric") == "failure_rate").first(),
        coverage_min=pl.col("coverage").min(),
        coverage_max=pl.col("coverage").max(),
    )
    per_week = yields.group_by("world", "judge", "design").agg(
        queue_failures=pl.col("failures").mean(),
        escalation_labels=pl.col("escalation_labels").mean(),
        eval_set_failures=pl.col("eval_set_failures").mean(),
        audited=pl.col("audited").mean(),
        audit_verdict_agreement=pl.col("audit_verdict_right").sum() / pl.col("audited").sum(),
        audit_category_agreement=pl.col("audit_category_right").sum() / pl.col("audited").sum(),
    )
    srs = table.filter((pl.col("design") == "uniform") & (pl.col("method") == "hajek") & ~pl.col("judge")
                       & (pl.col("metric") == "failure_rate")).select("world", srs_width="width")
    return (figures.join(per_week, on=["world", "judge", "design"]).join(srs, on="world")
            .with_columns(fail_vs_uniform_humans=pl.col("fail_width") / pl.col("srs_width")).drop("srs_width")
            .sort("world", pl.col("judge").not_(), "design"))


def _run(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    return run_seed(seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", type=Path, help="write the per-seed rows to this Parquet file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        parts = list(pool.map(_run, range(args.seeds), chunksize=4))
    results, yields = pl.concat([p[0] for p in parts]), pl.concat([p[1] for p in parts])
    if args.save:
        results.write_parquet(args.save)
        yields.write_parquet(args.save.with_suffix(".yields.parquet"))
    table = summarise(results)
    pl.Config.set_tbl_rows(500)
    pl.Config.set_tbl_cols(30)
    pl.Config.set_tbl_width_chars(400)
    pl.Config.set_float_precision(3)
    print(f"{args.seeds} seeds, budget {BUDGET} per agent-week, {time.perf_counter() - started:.0f} s. "
          "Ratios: mean CI width / proportional's (same world, judge, method). Target coverage 93–97 %.\n")
    print(headline(table, yields))
    print("\nPer metric (PPI with a judge, Hájek without):")
    main_rows = table.filter(pl.when(pl.col("judge")).then(pl.col("method") == "ppi").otherwise(pl.col("method") == "hajek"))
    print(main_rows.pivot("design", index=["world", "judge", "metric"], values=["ratio", "coverage"]))


if __name__ == "__main__":
    main()
