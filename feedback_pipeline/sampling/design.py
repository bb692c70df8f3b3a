"""The annotation-queue sampling design: strata, allocation, heavy-clicker cap, exact π.

Pure functions over Polars frames (no Dagster, no I/O): the `annotation_queue`
asset loads `automated_scores`, calls `sample_week`, and writes what it returns.

The design, per agent-week (what a reader of `inclusion_prob` needs to know):

1. **Strata** partition all traffic, first match wins: `escalated:<reason>`,
   `thumbs_down`, `low_score` (judge fail or deterministic low score),
   `user_rewrote`, `thumbs_up`, `unrated` (`assign_strata`).
2. **Draws.** Simple random sampling without replacement of `n_h` of the `N_h`
   traces of each stratum. `n_h`: every non-empty stratum gets ≥ 1; a
   `uniform_fraction` of the budget is spread in proportion to `N_h` (uniform
   coverage of all traffic, kept inside the stratified design); the rest follows
   the policy (`fixed` weights × N_h, `proportional` N_h, or `neyman` N_h·S_h);
   never more than N_h, leftover budget re-spread by the same shares (`allocate`).
3. **Heavy-clicker cap.** A user with K_u > `user_cap` draws in the agent-week
   keeps `user_cap` of them, chosen at random; null user_id is never capped.
   So no user ever has more than `user_cap` queue items, and the queue can only
   be shorter than the budget.

   π_i = (n_h / N_h) · e_i,   e_i = E[min(1, cap / K_u) | i drawn]   (`user_cap_prob`)

   exact: given i is drawn, K_u − 1 is a sum of independent hypergeometric counts
   (the user's other traces in each stratum), whose distribution we convolve.
   e_i = 1 for a user with at most `user_cap` traces in the agent-week.

Why not cap the frame first (keep `cap` of each heavy user's traces per stratum,
then sample): that thins heavy users even where the stratum's sampling rate
would rarely draw them, giving their few kept traces weights in the hundreds and
the estimates a large design effect; capping the draws thins only when needed.

Σ 1/π over a stratum's queue rows is the Horvitz–Thompson estimate of N_h: exact
when no capped user was drawn there (`check_inclusion` says what it tolerates).
"""

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy.stats import hypergeom

from feedback_pipeline.ingest.contract import ESCALATION_REASONS

STRATUM_KINDS: tuple[str, ...] = (
    "escalated", "thumbs_down", "low_score", "user_rewrote", "thumbs_up", "unrated",
)
# Sampling-rate multipliers relative to unrated traffic (allocation ∝ N_h × weight):
# escalations and thumbs-down carry most failures and the rarest categories.
DEFAULT_FIXED_WEIGHTS: Mapping[str, float] = {
    "escalated": 20.0, "thumbs_down": 10.0, "low_score": 5.0,
    "user_rewrote": 3.0, "thumbs_up": 1.0, "unrated": 1.0,
}
DESIGN_COLUMNS: tuple[str, ...] = (
    "week", "agent_id", "trace_id", "stratum", "inclusion_prob",
    "stratum_population", "stratum_sample_size", "stratum_draws",
    "user_cap_prob", "queue_position",
)


@dataclass(frozen=True)
class SamplingConfig:
    """How one agent-week's queue is drawn (see the module docstring)."""

    budget: int = 150
    uniform_fraction: float = 0.2
    allocation: Literal["fixed", "proportional", "neyman"] = "fixed"
    # Keys: a stratum kind ("escalated", ...) or a full stratum ("escalated:tone_wrong").
    fixed_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FIXED_WEIGHTS))
    # Neyman: S_h = sqrt(p(1-p)) from last week's stratum failure rate, floored;
    # a stratum without a prior gets p = 0.5 (the largest S_h).
    neyman_sd_floor: float = 0.1
    user_cap: int = 5
    seed: int = 0


def assign_strata(scores: pl.DataFrame) -> pl.DataFrame:
    """`scores` with a `stratum` column: the partition above, nulls read as False."""
    reason = pl.col("escalation_reason").fill_null("unspecified")
    low = (pl.col("judge_verdict") == "fail").fill_null(False) | pl.col(
        "deterministic_low_score"
    ).fill_null(False)
    stratum = (
        pl.when(pl.col("escalated").fill_null(False)).then(pl.lit("escalated:") + reason)
        .when((pl.col("thumbs") == "down").fill_null(False)).then(pl.lit("thumbs_down"))
        .when(low).then(pl.lit("low_score"))
        .when(pl.col("user_rewrote").fill_null(False)).then(pl.lit("user_rewrote"))
        .when((pl.col("thumbs") == "up").fill_null(False)).then(pl.lit("thumbs_up"))
        .otherwise(pl.lit("unrated"))
    )
    return scores.with_columns(stratum=stratum)


def stratum_priority(stratum: str) -> int:
    """Rank of a stratum in the priority order (escalation reasons in contract order)."""
    kind, _, reason = stratum.partition(":")
    if kind == "escalated":
        return ESCALATION_REASONS.index(reason) if reason in ESCALATION_REASONS else len(ESCALATION_REASONS)
    if kind in STRATUM_KINDS:
        return len(ESCALATION_REASONS) + 1 + STRATUM_KINDS.index(kind)
    return len(ESCALATION_REASONS) + 1 + len(STRATUM_KINDS)  # a caller's own stratum (e.g. "all")


def agent_week_seed(seed: int, agent_id: str, week: object) -> int:
    """A stable per-agent-week seed (blake2b, unlike hash(), is the same in every process)."""
    digest = hashlib.blake2b(f"{seed}|{agent_id}|{week}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def allocate(
    population: Mapping[str, int],
    config: SamplingConfig,
    prior_failure_rates: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """Draws n_h per stratum: ≥ 1 each, ≤ N_h, summing to the budget.

    (Or to the number of non-empty strata when that is larger: π > 0 comes first;
    or to N when the agent-week has fewer traces than the budget: all are drawn.)
    """
    strata = [h for h in population if population[h] > 0]
    big_n = np.array([population[h] for h in strata], dtype=float)
    target = min(max(config.budget, len(strata)), int(big_n.sum()))
    if target >= big_n.sum():
        return {h: int(c) for h, c in zip(strata, big_n)}
    uniform = config.uniform_fraction * config.budget * big_n / big_n.sum()
    policy = big_n * _policy_weights(strata, config, prior_failure_rates)

    def spread(t: float) -> np.ndarray:
        return np.minimum(big_n, np.maximum(1.0, uniform + t * policy))

    lo, hi = 0.0, 1.0
    while spread(hi).sum() < target and hi < 1e15:
        hi *= 2
    for _ in range(100):  # bisection on the policy scale: Σ spread(t) is monotone in t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spread(mid).sum() < target else (lo, mid)
    ideal = spread(hi)
    n = np.clip(np.floor(ideal), 1, big_n)
    while n.sum() != target:  # largest-remainder rounding within [1, N_h]
        gap = ideal - n
        if n.sum() < target:
            n[np.argmax(np.where(n < big_n, gap, -np.inf))] += 1
        else:
            n[np.argmin(np.where(n > 1, gap, np.inf))] -= 1
    return {h: int(k) for h, k in zip(strata, n)}


def _policy_weights(
    strata: list[str], config: SamplingConfig, prior: Mapping[str, float] | None
) -> np.ndarray:
    if config.allocation == "proportional":
        return np.ones(len(strata))
    if config.allocation == "fixed":
        weights = config.fixed_weights
        return np.array([weights.get(h, weights.get(h.partition(":")[0], 1.0)) for h in strata], dtype=float)
    if config.allocation == "neyman":
        p = np.array([(prior or {}).get(h, 0.5) for h in strata], dtype=float)
        return np.maximum(np.sqrt(np.clip(p, 0, 1) * (1 - np.clip(p, 0, 1))), config.neyman_sd_floor)
    raise ValueError(f"unknown allocation policy {config.allocation!r}")


def sample_agent_week(
    scores: pl.DataFrame,
    config: SamplingConfig = SamplingConfig(),
    prior_failure_rates: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """The queue of one agent-week: DESIGN_COLUMNS first, then every input column.

    `queue_position` (1 = first to label): the k-th queue item of stratum h (in
    random order) gets key (k-1)/q_h, ties go to the higher-priority stratum. Every
    stratum's first item comes first, and annotators who stop after any prefix
    have labeled about the same share of every stratum, a random subset of its items.
    """
    if scores.is_empty():
        return _empty_queue(scores)
    keys = scores.select("agent_id", "week").unique()
    if keys.height != 1:
        raise ValueError(f"sample_agent_week needs one agent-week, got {keys.height}")
    agent_id, week = keys.row(0)
    frame = scores if "stratum" in scores.columns else assign_strata(scores)
    frame = frame.sort("trace_id")  # draws must not depend on the input's row order
    rng = np.random.default_rng(agent_week_seed(config.seed, agent_id, week))
    strata = sorted(frame["stratum"].unique().to_list(), key=lambda h: (stratum_priority(h), h))
    population = dict(frame.group_by("stratum").len().iter_rows())
    draws = allocate(population, config, prior_failure_rates)
    frame = frame.with_columns(
        _draw_key=pl.Series(rng.random(frame.height)),
        _cap_key=pl.Series(rng.random(frame.height)),
        _prio=pl.col("stratum").replace_strict({h: i for i, h in enumerate(strata)}, return_dtype=pl.Int64),
        stratum_population=pl.col("stratum").replace_strict(population, return_dtype=pl.Int64),
        stratum_draws=pl.col("stratum").replace_strict(draws, return_dtype=pl.Int64),
    )
    drawn = frame.filter(pl.col("_draw_key").rank("ordinal").over("stratum") <= pl.col("stratum_draws"))
    keep = pl.col("user_id").is_null() | (pl.col("_cap_key").rank("ordinal").over("user_id") <= config.user_cap)
    queue = (
        drawn.filter(keep)
        .join(_user_cap_probs(frame, draws, config.user_cap), on=["user_id", "stratum"], how="left")
        .with_columns(
            user_cap_prob=pl.col("user_cap_prob").fill_null(1.0),
            stratum_sample_size=pl.len().over("stratum").cast(pl.Int64),
            _rank=pl.col("_draw_key").rank("ordinal").over("stratum"),
        )
        .with_columns(
            inclusion_prob=pl.col("user_cap_prob") * pl.col("stratum_draws") / pl.col("stratum_population"),
            _key=(pl.col("_rank") - 1) / pl.col("stratum_sample_size"),
        )
        .sort("_key", "_prio", "_rank")
        .with_row_index("queue_position", offset=1)
        .with_columns(pl.col("queue_position").cast(pl.Int64))
    )
    return queue.select(*DESIGN_COLUMNS, *[c for c in scores.columns if c not in DESIGN_COLUMNS])


def _user_cap_probs(frame: pl.DataFrame, draws: Mapping[str, int], cap: int) -> pl.DataFrame:
    """e = P(kept | drawn) per (user, stratum), for users who could be drawn > cap times.

    Given a trace of stratum h is drawn, the user's other draws are independent
    hypergeometric counts: Hyp(N_h−1, m_uh−1, n_h−1) in h, Hyp(N_g, m_ug, n_g) in
    each other stratum g. K = 1 + their sum; the cap keeps it with prob min(1, cap/K).
    """
    counts = frame.filter(pl.col("user_id").is_not_null()).group_by("user_id", "stratum").agg(
        m=pl.len(), big_n=pl.col("stratum_population").first()
    )
    n_h = pl.col("stratum").replace_strict(draws, return_dtype=pl.Int64)
    most = pl.min_horizontal("m", n_h)
    # Users who could be drawn more than `cap` times but almost surely are not: their
    # draws K are a sum of independent hypergeometrics with mean lam = sum m_h n_h / N_h,
    # and Chernoff (which holds for hypergeometric sums, Hoeffding 1963) gives
    # P(K >= cap) <= exp(-lam) (e lam / cap)^cap. Below 1e-12 their e is 1 to that
    # precision; this spares the convolution for the many ordinary users of a big week.
    lam = (pl.col("m") * n_h / pl.col("big_n")).sum().over("user_id")
    log_bound = pl.when(lam < cap).then(-lam + cap * (1 + lam.log() - np.log(cap))).otherwise(0.0)
    heavy = counts.filter((most.sum().over("user_id") > cap) & (log_bound > np.log(1e-12))
                          ).sort("user_id", "stratum")  # else K ≤ cap surely, or e = 1 to 1e-12
    rows = []  # a loop per heavy user (few), each a handful of small convolutions
    for (user_id,), group in heavy.group_by("user_id", maintain_order=True):
        cells = list(group.select("stratum", "m", "big_n").iter_rows())
        full = {h: _hypergeom_pmf(int(big_n), int(m), draws[h]) for h, m, big_n in cells}
        for h, m, big_n in cells:
            pmf = _hypergeom_pmf(int(big_n) - 1, int(m) - 1, draws[h] - 1)
            for g, other in full.items():
                if g != h:
                    pmf = np.convolve(pmf, other)
            k = 1 + np.arange(len(pmf))
            # Clipped: the convolved PMF can sum to 1 + 1e-11 in floating point.
            rows.append((user_id, h, min(1.0, float(pmf @ np.minimum(1.0, cap / k)))))
    schema = {"user_id": frame.schema["user_id"], "stratum": pl.String, "user_cap_prob": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


@functools.lru_cache(maxsize=4096)
def _hypergeom_pmf(population: int, successes: int, draws: int) -> np.ndarray:
    """P(X = 0..successes) drawing `draws` from `population` holding `successes`."""
    pmf = np.ones(1) if successes <= 0 or draws <= 0 else hypergeom.pmf(
        np.arange(successes + 1), population, successes, draws
    )
    pmf.setflags(write=False)  # shared through the cache
    return pmf


def sample_week(
    scores: pl.DataFrame,
    config: SamplingConfig = SamplingConfig(),
    prior_failure_rates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`sample_agent_week` over every agent-week in `scores`, concatenated.

    `prior_failure_rates`: columns agent_id, stratum, failure_rate (for `neyman`).
    """
    parts = []
    for (agent_id, week), group in scores.group_by("agent_id", "week", maintain_order=True):
        prior = None
        if prior_failure_rates is not None:
            rows = prior_failure_rates.filter(pl.col("agent_id") == agent_id)
            prior = dict(rows.select("stratum", "failure_rate").iter_rows())
        parts.append(sample_agent_week(group, config, prior))
    if not parts:
        return _empty_queue(scores)
    return pl.concat(parts, how="vertical").sort("week", "agent_id", "queue_position")


def stratum_failure_rates(labeled: pl.DataFrame) -> pl.DataFrame:
    """Last week's weighted failure rate per agent and stratum, for `neyman` allocation.

    `labeled`: queue rows with `verdict` (null = not labeled yet, skipped).
    """
    done = labeled.filter(pl.col("verdict").is_not_null())
    weight = 1 / pl.col("inclusion_prob")
    return done.group_by("agent_id", "stratum").agg(
        failure_rate=((pl.col("verdict") == "fail").cast(pl.Float64) * weight).sum() / weight.sum()
    ).sort("agent_id", "stratum")


def _empty_queue(scores: pl.DataFrame) -> pl.DataFrame:
    design = {
        "stratum": pl.String, "inclusion_prob": pl.Float64, "stratum_population": pl.Int64,
        "stratum_sample_size": pl.Int64, "stratum_draws": pl.Int64,
        "user_cap_prob": pl.Float64, "queue_position": pl.Int64,
    }
    schema = {c: scores.schema.get(c, design.get(c, pl.String)) for c in DESIGN_COLUMNS}
    schema |= {c: t for c, t in scores.schema.items() if c not in schema}
    return pl.DataFrame(schema=schema)


def check_inclusion(queue: pl.DataFrame) -> list[str]:
    """Problems with a queue's inclusion probabilities (empty list: all good).

    Exact, to 1e-9: π in (0, 1]; π = user_cap_prob · n_h / N_h; each stratum has
    `stratum_sample_size` rows q_h ≤ n_h ≤ N_h. Σ 1/π over a stratum is not N_h
    exactly once the cap is involved: Σ 1/π − N_h = (N_h/n_h)·(Σ_kept (1/e_i − 1)
    − (n_h − q_h)), a mean-zero difference between the up-weighting of capped
    users' kept draws and the draws the cap removed. So the tolerance is
    (N_h/n_h)·max(Σ_kept (1/e_i − 1), n_h − q_h), read off the queue: 0 (exact,
    up to 1e-9·N_h) where no capped user was drawn, and never more than the
    capped users' own share otherwise. A wrong N_h, a lost row or a π not built
    from this design shows up as a violation.
    """
    problems = []
    bad = queue.filter(
        pl.col("inclusion_prob").is_null() | (pl.col("inclusion_prob") <= 0) | (pl.col("inclusion_prob") > 1)
    )
    if bad.height:
        problems.append(f"{bad.height} rows with inclusion_prob outside (0, 1], e.g. {bad['trace_id'][0]}")
    implied = pl.col("user_cap_prob") * pl.col("stratum_draws") / pl.col("stratum_population")
    inconsistent = queue.filter((pl.col("inclusion_prob") - implied).abs() > 1e-9)
    if inconsistent.height:
        problems.append(f"{inconsistent.height} rows where inclusion_prob != user_cap_prob·n_h/N_h")
    per_stratum = queue.group_by("week", "agent_id", "stratum").agg(
        rows=pl.len(),
        weight_sum=(1 / pl.col("inclusion_prob")).sum(),
        upweight=(1 / pl.col("user_cap_prob") - 1).sum(),
        q=pl.col("stratum_sample_size").first(),
        n=pl.col("stratum_draws").first(),
        big_n=pl.col("stratum_population").first(),
        distinct=pl.struct("stratum_sample_size", "stratum_draws", "stratum_population").n_unique(),
    )
    for row in per_stratum.sort("week", "agent_id", "stratum").iter_rows(named=True):
        where = f"{row['agent_id']} {row['week']} {row['stratum']}"
        q, n, big_n, total = row["q"], row["n"], row["big_n"], row["weight_sum"]
        if row["distinct"] != 1 or row["rows"] != q or not 1 <= q <= n <= big_n:
            problems.append(f"{where}: sizes inconsistent (rows={row['rows']}, q_h={q}, n_h={n}, N_h={big_n})")
            continue
        tolerance = big_n / n * max(row["upweight"], n - q) + 1e-9 * big_n
        if abs(total - big_n) > tolerance:
            problems.append(f"{where}: Σ1/π = {total:.2f}, stratum_population = {big_n} (tolerance {tolerance:.2f})")
    return problems
