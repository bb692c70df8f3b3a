"""Calibration and power of the impact comparisons at the demo's sizes.

Run: `.venv/bin/python benchmarks/impact_power.py [--aa-seeds 1000] [--power-seeds 400] [--label-seeds 200]
[--budgets 150 300] [--skip-turns]` (about 7 minutes on one core).

1. Turn metrics (`side_estimate` + `compare_estimates`, clustered by conversation).
   Traffic like the demo world's: conversations of 1–6 turns (mean ≈ 2.4) with a
   conversation random effect (sd 1 on the log-odds), so turns of one conversation
   are correlated. Sides: the sequential window (2 weeks of 5,000 or 9,000 turns per
   agent-week) and one A/B week's arm (2,500 turns). Printed: the A/A false-positive
   rate, clustered and naive (every turn its own cluster); the ratio of the clustered
   to the naive SE and of the clustered SE to the true SD of the effect over seeds;
   power for a few effects beside the analytic power at the true SE; and the power at
   the reported MDE (should be ≈ 80 %).
2. Human-labeled failure rate (`compare_sides`, hajek and ppi rows) on the real
   annotation-queue design (`sampling.design.sample_week`, 150 and 300 labels per agent-week)
   over `benchmarks/coverage.py`'s simulated traffic (thumbs, escalations, a ~91 %
   accurate judge): A/A and a planted 15 % → 20 % change, 2 agent-weeks per side.
"""

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feedback_pipeline.impact.compare import compare_sides  # noqa: E402
from feedback_pipeline.impact.effects import analytic_power, compare_estimates, side_estimate  # noqa: E402

LENGTHS, LENGTH_P = np.arange(1, 7), np.array([.34, .24, .17, .12, .08, .05])
SIGMA = 1.0  # conversation random effect on the log-odds, as in the demo world
_X, _H = np.polynomial.hermite_e.hermegauss(60)
_H = _H / _H.sum()


def _intercept(p: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(_H / (1 + np.exp(-(mid + SIGMA * _X)))) < p else (lo, mid)
    return (lo + hi) / 2


def true_variance(p: float, n_turns: int) -> float:
    """Var of a side's turn mean: G·E[m(p − E p_g²) + m²(E p_g² − p²)] / n², G = n / E[m]."""
    a = _intercept(p)
    ep2 = float(np.sum(_H / (1 + np.exp(-(a + SIGMA * _X))) ** 2))
    em, em2 = LENGTH_P @ LENGTHS, LENGTH_P @ LENGTHS**2
    return (em * (p - ep2) + em2 * (ep2 - p * p)) / (n_turns / em * em**2)


def simulate_side(rng: np.random.Generator, p: float, n_turns: int) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 outcome per turn, conversation id per turn) for about n_turns turns."""
    lengths = rng.choice(LENGTHS, size=int(n_turns / (LENGTH_P @ LENGTHS)), p=LENGTH_P)
    conv = np.repeat(np.arange(len(lengths)), lengths)
    effect = _intercept(p) + SIGMA * rng.standard_normal(len(lengths))
    return (rng.random(len(conv)) < 1 / (1 + np.exp(-effect[conv]))).astype(float), conv


def turn_comparisons(seeds: range, p0: float, p1: float, n_turns: int) -> dict[str, np.ndarray]:
    out = {k: [] for k in ("effect", "p", "p_naive", "se", "se_naive", "mde")}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        (y0, c0), (y1, c1) = simulate_side(rng, p0, n_turns), simulate_side(rng, p1, n_turns)
        clustered = compare_estimates(side_estimate(y0, c0), side_estimate(y1, c1))
        naive = compare_estimates(side_estimate(y0), side_estimate(y1))
        for key, value in (("effect", clustered["effect"]), ("p", clustered["p_value"]),
                           ("p_naive", naive["p_value"]), ("se", clustered["std_error"]),
                           ("se_naive", naive["std_error"]), ("mde", clustered["mde"])):
            out[key].append(value)
    return {k: np.array(v) for k, v in out.items()}


def _interval(hits: np.ndarray) -> str:
    k, n = int(hits.sum()), len(hits)  # Clopper–Pearson 95 %
    lo = st.beta.ppf(.025, k, n - k + 1) if k > 0 else 0.0
    hi = st.beta.ppf(.975, k + 1, n - k) if k < n else 1.0
    return f"{k / n:6.1%} [{lo:.1%}, {hi:.1%}]"


def turn_section(aa_seeds: int, power_seeds: int) -> None:
    print("== turn metrics, clustered by conversation ==")
    print(f"{'side':>28} {'p':>5} {'A/A FPR clustered':>26} {'A/A FPR naive':>26} "
          f"{'SE clu/naive':>12} {'SE/true SD':>10} {'true SD':>8}")
    configs = [("2 weeks x 5,000 turns", 10_000), ("2 weeks x 9,000 turns", 18_000), ("A/B arm, 1 week", 2_500)]
    for label, n in configs:
        for p in (0.15, 0.03):
            r = turn_comparisons(range(aa_seeds), p, p, n)
            sd = np.sqrt(2 * true_variance(p, n))
            print(f"{label:>28} {p:5.2f} {_interval(r['p'] < .05):>26} {_interval(r['p_naive'] < .05):>26} "
                  f"{np.mean(r['se'] / r['se_naive']):12.2f} {np.mean(r['se']) / np.std(r['effect']):10.2f} {sd:8.4f}")
    print("\npower (clustered, two-sided 5 %) vs analytic at the true SE; last column: power at the reported MDE")
    print(f"{'side':>28} {'p0':>5} {'effect':>7} {'empirical':>26} {'analytic':>9} {'mean MDE':>9}")
    for label, n in configs[:2]:
        for p0, effects in ((0.15, (-0.005, -0.01, -0.015, -0.02, -0.03)), (0.03, (-0.003, -0.006, -0.009))):
            sd = np.sqrt(true_variance(p0, n) + true_variance(p0, n))
            for effect in effects:
                r = turn_comparisons(range(10_000, 10_000 + power_seeds), p0, p0 + effect, n)
                exact_sd = np.sqrt(true_variance(p0, n) + true_variance(p0 + effect, n))
                print(f"{label:>28} {p0:5.2f} {effect:+7.3f} {_interval(r['p'] < .05):>26} "
                      f"{analytic_power(effect, exact_sd):9.1%} {np.mean(r['mde']):9.4f}")
            mde = 2.8 * sd
            r = turn_comparisons(range(20_000, 20_000 + power_seeds), p0, p0 - mde, n)
            print(f"{label:>28} {p0:5.2f} {-mde:+7.4f} {_interval(r['p'] < .05):>26} "
                  f"{analytic_power(-mde, sd):9.1%}   (effect = 2.8 x true SD: the MDE)")


def labeled_weeks(seed: int, risks: tuple[float, ...], budget: int, turns: int = 6000
                  ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(scores of agent `a` for len(risks) weeks, labeled queue rows) with the true labels."""
    from benchmarks.coverage import _agent
    from feedback_pipeline.sampling.design import SamplingConfig, sample_week

    rng = np.random.default_rng(seed)
    week0 = date(2026, 10, 5)
    weeks = [
        _agent(rng, f"w{k}", turns, week0 + timedelta(weeks=k), risk).with_columns(agent_id=pl.lit("a"))
        for k, risk in enumerate(risks)
    ]
    scores = pl.concat(weeks)
    queue = sample_week(scores, SamplingConfig(budget=budget, seed=seed))
    labels = queue.select("trace_id", "agent_id", "week", "stratum", "inclusion_prob", "stratum_sample_size").join(
        scores.select("trace_id", verdict="true_verdict", failure_category="true_category"), on="trace_id")
    return scores, labels


def label_section(seeds: int, budget: int) -> None:
    print(f"\n== human-labeled failure rate ({budget} labels per agent-week, 2 weeks of 6,000 turns per side) ==")
    for name, risks in (("A/A", (1.0, 1.0, 1.0, 1.0)), ("15 % -> 20 %", (1.0, 1.0, 4 / 3, 4 / 3))):
        rows = []
        for seed in range(seeds):
            scores, labels = labeled_weeks(seed, risks, budget)
            weeks = scores["week"].unique().sort().to_list()
            before, after = (scores.filter(pl.col("week").is_in(weeks[i:i + 2])) for i in (0, 2))
            out = compare_sides(before, after, labels, labels, categories=["wrong_information"])
            rows.append(out.filter(pl.col("metric").str.starts_with("failure_rate")))
        res = pl.concat(rows)
        for (metric, method), g in res.group_by("metric", "method", maintain_order=True):
            sig = (g["p_value"] < 0.05).to_numpy()
            print(f"{name:>13} {metric:>34} {method:>6}: rejections {_interval(sig)}; mean effect "
                  f"{g['effect'].mean():+.4f}, mean SE {g['std_error'].mean():.4f}, SD of effect "
                  f"{g['effect'].std():.4f}, mean MDE {g['mde'].mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa-seeds", type=int, default=1000)
    parser.add_argument("--power-seeds", type=int, default=400)
    parser.add_argument("--label-seeds", type=int, default=200)
    parser.add_argument("--budgets", type=int, nargs="*", default=[150, 300], help="labels per agent-week")
    parser.add_argument("--skip-turns", action="store_true", help="only the human-labeled section")
    args = parser.parse_args()
    start = time.time()
    if not args.skip_turns:
        turn_section(args.aa_seeds, args.power_seeds)
        print(f"({time.time() - start:.0f} s)")
    for budget in args.budgets if args.label_seeds else ():
        label_section(args.label_seeds, budget)
    print(f"({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
