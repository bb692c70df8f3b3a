"""Coverage of the quality estimators' 95 % intervals on simulated agent-weeks.

Run: `.venv/bin/python benchmarks/coverage.py --seeds 200 [--workers 2]`.

Each seed simulates two agents' week of traffic with a known truth (every trace's
true verdict and category) and a skewed feedback process: thumbs are rare, skewed
negative and dominated by a few heavy clickers (some of them trolls); escalation
reasons mostly match the failure; user rewrites follow failures; a judge with
~90 % accuracy that over-calls failures and sometimes errors. The queue is drawn by
`sampling.design`, annotators (exact, in the simulation) label a random 70–100 %
prefix of it, and `estimates.estimators` estimates. At the same number of labels,
a uniform random sample is estimated too, for the width comparison.

Printed per method and metric: coverage of the finite-population truth, mean bias,
mean CI width. `hajek_wald` (estimate ± z·std_error) shows why the intervals are
not Wald. The test suite imports `simulate_scores` and `label_queue` from here.
"""

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feedback_pipeline.sampling.allocation import SamplingConfig  # noqa: E402
from feedback_pipeline.sampling.design import sample_week  # noqa: E402
from feedback_pipeline.estimates.estimators import estimate_quality  # noqa: E402
from feedback_pipeline.rubrics import failure_categories  # noqa: E402

WEEK = date(2026, 11, 16)
FAILURE_CATEGORIES = failure_categories("v1")  # the categories the simulation draws from
AGENT_SIZES = {"agent_a": 4000, "agent_b": 1500}
# True category shares (the rest pass): overall failure rate ≈ 15 %, policy_violation rare.
CATEGORY_RATES = {
    "could_not_answer": 0.05, "wrong_information": 0.04, "tone_wrong": 0.015,
    "tool_failed": 0.025, "policy_violation": 0.006, "other": 0.014,
}
REASON_OF = {c: ("agent_could_not_answer" if c == "could_not_answer" else c) for c in CATEGORY_RATES}
ESCALATE = {"could_not_answer": 0.25, "wrong_information": 0.12, "tone_wrong": 0.3,
            "tool_failed": 0.35, "policy_violation": 0.4, "other": 0.1}
HEAVY_CLICKERS = np.array([4, 7, 11, 15, 20, 26])
REASONS = ("agent_could_not_answer", "tone_wrong", "tool_failed", "wrong_information",
           "policy_violation", "user_requested_human", "other")


def simulate_scores(seed: int, sizes: dict[str, int] = AGENT_SIZES, week: date = WEEK) -> pl.DataFrame:
    """An `automated_scores`-shaped frame plus the truth (`true_verdict`, `true_category`)."""
    rng = np.random.default_rng(seed)
    return pl.concat([_agent(rng, agent, n, week, 1.0 + 0.3 * i) for i, (agent, n) in enumerate(sizes.items())])


def _agent(rng: np.random.Generator, agent: str, n: int, week: date, risk: float) -> pl.DataFrame:
    n_users = max(n // 4, 30)
    popularity = 1 / np.arange(1, n_users + 1) ** 0.8  # a few users send many messages
    user_idx = rng.choice(n_users, size=n, p=popularity / popularity.sum())
    users = np.array([f"{agent}-u{i}" for i in range(n_users)], dtype=object)[user_idx]
    users[rng.random(n) < 0.03] = None  # anonymous traffic
    # Six frequent users are heavy clickers, half of them trolls; most users rarely rate.
    heavy, trolls = np.isin(user_idx, HEAVY_CLICKERS), np.isin(user_idx, HEAVY_CLICKERS[::2])
    propensity = np.where(heavy, 0.5, np.where(rng.random(n_users)[user_idx] < 0.1, 0.08, 0.015))
    troll = trolls
    cats = list(CATEGORY_RATES)
    probs = np.array([CATEGORY_RATES[c] for c in cats]) * risk
    draw = rng.choice(len(cats) + 1, size=n, p=[*probs, 1 - probs.sum()])
    fail = draw < len(cats)
    category = np.array([*cats, None], dtype=object)[draw]

    rated = rng.random(n) < np.minimum(propensity * np.where(fail, 3.0, 1.0), 0.95)
    down = np.where(troll, rng.random(n) < 0.9, rng.random(n) < np.where(fail, 0.85, 0.12))
    thumbs = np.where(rated, np.where(down, "down", "up"), None)

    p_esc = np.where(fail, [ESCALATE.get(c, 0.0) for c in category], 0.008)
    escalated = rng.random(n) < p_esc
    u = rng.random(n)
    matching = np.array([REASON_OF.get(c, "user_requested_human") for c in category], dtype=object)
    random_reason = np.array(REASONS, dtype=object)[rng.integers(len(REASONS), size=n)]
    reason = np.where(fail, np.where(u < 0.8, matching, np.where(u < 0.9, "user_requested_human", random_reason)),
                      np.where(u < 0.7, "user_requested_human", random_reason))
    reason = np.where(escalated, reason, None)
    rewrote = rng.random(n) < np.where(fail, 0.2, 0.04)
    det_p = np.select([category == "tool_failed", category == "could_not_answer", fail], [0.6, 0.4, 0.05], 0.03)
    det_low = rng.random(n) < det_p

    judge_fail = rng.random(n) < np.where(fail, 0.78, 0.06)  # ~91 % accurate, over-calls failures
    right_cat = rng.random(n) < 0.8
    wrong_cat = np.array(cats, dtype=object)[rng.choice(len(cats), size=n, p=[0.1, 0.4, 0.2, 0.0, 0.0, 0.3])]
    judge_cat = np.where(judge_fail, np.where(fail & right_cat, category, wrong_cat), None)
    errored = rng.random(n) < 0.02
    return scores_frame(agent, week, users, thumbs, escalated, reason, rewrote, det_low,
                        judge_fail, judge_cat, errored, fail, category)


def scores_frame(agent: str, week: date, users, thumbs, escalated, reason, rewrote, det_low,
                 judge_fail, judge_cat, errored, fail, category) -> pl.DataFrame:
    """A simulated agent-week's arrays as an `automated_scores`-shaped frame plus the truth."""
    n = len(fail)
    return pl.DataFrame({
        "week": [week] * n,
        "trace_id": [f"{agent}-t{i:05d}" for i in range(n)],
        "agent_id": [agent] * n,
        "user_id": users.tolist(),
        "thumbs": thumbs.tolist(),
        "escalated": escalated,
        "escalation_reason": reason.tolist(),
        "user_rewrote": rewrote,
        "deterministic_low_score": det_low,
        "judge_verdict": np.where(errored, None, np.where(judge_fail, "fail", "pass")).tolist(),
        "judge_failure_category": np.where(errored, None, judge_cat).tolist(),
        "judge_error": np.where(errored, "timeout", None).tolist(),
        "judge_selection_prob": [1.0] * n,
        "true_verdict": np.where(fail, "fail", "pass").tolist(),
        "true_category": category.tolist(),
    }, schema_overrides={"week": pl.Date, "user_id": pl.String, "thumbs": pl.String,
                         "escalation_reason": pl.String, "judge_verdict": pl.String,
                         "judge_failure_category": pl.String, "judge_error": pl.String,
                         "true_category": pl.String})


def label_queue(queue: pl.DataFrame, scores: pl.DataFrame, completion: dict[str, float]) -> pl.DataFrame:
    """Queue rows with the true label on the first `completion[agent]` share of each queue."""
    truth = scores.select("trace_id", verdict="true_verdict", failure_category="true_category")
    done = pl.col("queue_position") <= (pl.col("agent_id").replace_strict(completion) * pl.len().over("agent_id")).ceil()
    return (
        queue.select("trace_id", "agent_id", "stratum", "inclusion_prob", "stratum_population",
                     "stratum_sample_size", "queue_position")
        .join(truth, on="trace_id")
        .with_columns(pl.when(done).then(pl.col(c)).otherwise(None).alias(c) for c in ("verdict", "failure_category"))
        .with_columns(rubric_version=pl.lit("v1"))
    )


def truth_rates(scores: pl.DataFrame) -> pl.DataFrame:
    """The finite-population truth per agent and metric."""
    exprs = [(pl.col("true_verdict") == "fail").mean().alias("failure_rate")]
    exprs += [(pl.col("true_category") == c).fill_null(False).mean().alias(f"failure_rate:{c}") for c in FAILURE_CATEGORIES]
    wide = scores.group_by("agent_id").agg(exprs)
    return wide.unpivot(index="agent_id", variable_name="metric", value_name="truth")


def uniform_sample(scores: pl.DataFrame, labels_per_agent: dict[str, int], seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Simple random sample of the same label count per agent, as one stratum `all`."""
    rng = np.random.default_rng(seed)
    population = scores.with_columns(stratum=pl.lit("all"), _u=pl.Series(rng.random(scores.height)))
    size = pl.col("agent_id").replace_strict(labels_per_agent, return_dtype=pl.Int64)
    population = population.with_columns(
        _rank=pl.col("_u").rank("ordinal").over("agent_id"),
        inclusion_prob=size / pl.len().over("agent_id"),
        stratum_population=pl.len().over("agent_id"),
        stratum_sample_size=size,
    )
    sample = population.filter(pl.col("_rank") <= size).with_columns(
        verdict=pl.col("true_verdict"), failure_category=pl.col("true_category")
    )
    return population.drop("_u", "_rank"), sample


def run_seed(seed: int) -> pl.DataFrame:
    scores = simulate_scores(seed)
    rng = np.random.default_rng(seed + 10_000)
    completion = {a: float(rng.uniform(0.7, 1.0)) for a in AGENT_SIZES}
    queue = sample_week(scores, SamplingConfig(seed=seed))
    labeled = label_queue(queue, scores, completion)
    stratified = estimate_quality(scores, labeled, FAILURE_CATEGORIES).with_columns(design=pl.lit("stratified"))
    counts = dict(labeled.filter(pl.col("verdict").is_not_null()).group_by("agent_id").len().iter_rows())
    population, sample = uniform_sample(scores, counts, seed + 20_000)
    uniform = estimate_quality(population, sample, FAILURE_CATEGORIES).with_columns(design=pl.lit("uniform"))
    return pl.concat([stratified, uniform]).join(truth_rates(scores), on=["agent_id", "metric"]).with_columns(
        seed=pl.lit(seed)
    )


def summarise(results: pl.DataFrame, z: float = 1.959964) -> pl.DataFrame:
    wald = results.filter((pl.col("method") == "hajek") & (pl.col("design") == "stratified")).with_columns(
        method=pl.lit("hajek_wald"),
        ci_low=(pl.col("estimate") - z * pl.col("std_error")),
        ci_high=(pl.col("estimate") + z * pl.col("std_error")),
    )
    everything = pl.concat([results, wald]).filter(pl.col("estimate").is_not_null())
    return (
        everything.group_by("design", "method", "metric")
        .agg(
            coverage=((pl.col("ci_low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("ci_high"))).mean(),
            bias=(pl.col("estimate") - pl.col("truth")).mean(),
            width=(pl.col("ci_high") - pl.col("ci_low")).mean(),
            rmse=((pl.col("estimate") - pl.col("truth")) ** 2).mean().sqrt(),
            n=pl.len(),
        )
        .sort("design", "method", "metric")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = pl.concat(list(pool.map(run_seed, range(args.seeds), chunksize=8)))
    table = summarise(results)
    pl.Config.set_tbl_rows(200)
    pl.Config.set_tbl_width_chars(200)
    pl.Config.set_float_precision(4)
    print(f"{args.seeds} seeds × {len(AGENT_SIZES)} agents = {args.seeds * len(AGENT_SIZES)} agent-weeks, "
          f"{time.perf_counter() - started:.0f} s. Target coverage 93–97 %.\n")
    print(table)
    hajek = table.filter(pl.col("method") == "hajek")
    widths = hajek.pivot("design", index="metric", values="width")
    errors = hajek.pivot("design", index="metric", values="rmse")
    print("\nEqual label count, Hájek: stratified+weighted design vs uniform random sample")
    print(widths.join(errors, on="metric", suffix="_rmse").select(
        "metric",
        width_stratified="stratified", width_uniform="uniform",
        width_ratio=pl.col("stratified") / pl.col("uniform"),
        rmse_ratio=pl.col("stratified_rmse") / pl.col("uniform_rmse"),
    ))
    ppi = table.filter(pl.col("method").is_in(["hajek", "ppi"])).pivot("method", index=["design", "metric"], values="width")
    print("\nCI width, PPI vs humans only (Hájek), same labels")
    print(ppi.with_columns(ratio=pl.col("ppi") / pl.col("hajek")).sort("design", "metric"))

if __name__ == "__main__":
    main()
