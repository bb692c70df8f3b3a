"""The annotation-queue sampling design: strata, allocation, heavy-clicker cap, exact π.

The draws themselves live here (`sample_agent_week`, `sample_week`); the pieces
they use each have a module: `strata` (which stratum), `allocation` (n_h),
`user_cap` (the cap's exact factor e_i), `inclusion_check` (the π check), `priors`
(last week's stratum rates). Pure functions over Polars frames (no Dagster, no
I/O): the `annotation_queue` asset loads `automated_scores`, calls `sample_week`,
and writes what it returns.

The design, per agent-week (what a reader of `inclusion_prob` needs to know):

1. **Strata** partition all traffic, first match wins: `escalated:<reason>`,
   `thumbs_down`, `low_score` (judge fail or deterministic low score),
   `user_rewrote`, `thumbs_up`, `unrated` (`strata.assign_strata`).
2. **Draws.** Simple random sampling without replacement of `n_h` of the `N_h`
   traces of each stratum. `n_h`: every non-empty stratum gets ≥ 1; a
   `uniform_fraction` of the budget is spread in proportion to `N_h` (uniform
   coverage of all traffic, kept inside the stratified design); the rest follows
   the policy (`optimal`, the default: a compromise Neyman allocation, see `optimal`;
   `fixed` weights × N_h; `proportional` N_h; or `neyman` N_h·S_h);
   never more than N_h, leftover budget re-spread by the same shares (`allocation.allocate`).
3. **Heavy-clicker cap.** A user with K_u > `user_cap` draws in the agent-week
   keeps `user_cap` of them, chosen at random; null user_id is never capped.
   So no user ever has more than `user_cap` queue items, and the queue can only
   be shorter than the budget.

   π_i = (n_h / N_h) · e_i,   e_i = E[min(1, cap / K_u) | i drawn]   (`user_cap.user_cap_probs`)

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

import hashlib
from collections.abc import Mapping

import numpy as np
import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.sampling.allocation import SamplingConfig, allocate
from feedback_pipeline.sampling.schemas import AnnotationQueue
from feedback_pipeline.sampling.strata import assign_strata, stratum_priority
from feedback_pipeline.sampling.user_cap import user_cap_probs

# The queue's design columns: the AnnotationQueue model's columns up to queue_position.
_QUEUE_COLUMNS = list(polars_schema(AnnotationQueue))
DESIGN_COLUMNS: tuple[str, ...] = tuple(_QUEUE_COLUMNS[: _QUEUE_COLUMNS.index("queue_position") + 1])


def agent_week_seed(seed: int, agent_id: str, week: object) -> int:
    """A stable per-agent-week seed (blake2b, unlike hash(), is the same in every process)."""
    digest = hashlib.blake2b(f"{seed}|{agent_id}|{week}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sample_agent_week(
    scores: pl.DataFrame,
    config: SamplingConfig = SamplingConfig(),
    prior_failure_rates: Mapping[str, float] | None = None,
    prior_labels: Mapping[str, int] | None = None,
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
    draws = allocate(population, config, prior_failure_rates, prior_labels)
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
        .join(user_cap_probs(frame, draws, config.user_cap), on=["user_id", "stratum"], how="left")
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


def sample_week(
    scores: pl.DataFrame,
    config: SamplingConfig = SamplingConfig(),
    prior_failure_rates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`sample_agent_week` over every agent-week in `scores`, concatenated.

    `prior_failure_rates`: columns agent_id, stratum, failure_rate and optionally labels
    (`priors.stratum_failure_rates`; for `neyman` and `optimal`).
    """
    parts = []
    for (agent_id, week), group in scores.group_by("agent_id", "week", maintain_order=True):
        prior = counts = None
        if prior_failure_rates is not None:
            rows = prior_failure_rates.filter(pl.col("agent_id") == agent_id)
            prior = dict(rows.select("stratum", "failure_rate").iter_rows())
            counts = dict(rows.select("stratum", "labels").iter_rows()) if "labels" in rows.columns else None
        parts.append(sample_agent_week(group, config, prior, counts))
    if not parts:
        return _empty_queue(scores)
    return pl.concat(parts, how="vertical").sort("week", "agent_id", "queue_position")


def _empty_queue(scores: pl.DataFrame) -> pl.DataFrame:
    design = polars_schema(AnnotationQueue)
    schema = {c: scores.schema.get(c, design[c]) for c in DESIGN_COLUMNS}
    schema |= {c: t for c, t in scores.schema.items() if c not in schema}
    return pl.DataFrame(schema=schema)
