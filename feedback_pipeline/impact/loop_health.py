"""Loop health: is the feedback loop working, week over week per agent, with warning flags.

Pure functions over Polars frames (no Dagster, no connections): the `loop_health` asset
loads the inputs below (`load.loop_inputs`), calls `loop_health`, and turns the flag columns
into a WARN check. The signs are computed in `loop_signals.py`, the flags in `loop_flags.py`;
this module holds the settings and joins them on a calendar grid.

Inputs (the loader computes them; every frame may be empty, `estimates`, `labels` and
`calibration` may be None):
- `scores_weekly_mix`: week (date), agent_id, intent, channel, n_traces, n_rated — from
  `SELECT week, agent_id, intent, channel, count(*) AS n_traces, count(thumbs) AS n_rated
   FROM automated_scores GROUP BY ALL`.
- `estimates`: `quality_estimates` rows (week, agent_id, metric, method, estimate, ci_low, ci_high).
- `snapshots`: `eval_set_snapshots` rows (agent_id, week, split, verdict, failure_category).
- `labels`: one row per imported label: agent_id and imported_at (timestamp) or week —
  `human_labels` joined to `automated_scores` on trace_id for the agent.
- `calibration`: `judge_calibration` rows (month "YYYY-MM", cohens_kappa, n_compared optional).
- `replay` (optional): `heldout_replay` rows (week, agent_id, case_id, conversation_id, verdict, error).

Definitions (LoopHealthConfig holds the numbers):
- `pass_rate` (`pass_rate_source`): with replay verdicts for the agent-week, the judge's "pass"
  share of the week's live version's answers to the held-out cases (test split + canary;
  "replay"); otherwise the "pass" share of the gold labels of the logged answers in the test
  split ("logged_answers"). 95 % Wilson CI clustered by conversation (`heldout_stats`).
  `pass_rate_mom_change`: minus the pass rate `month_weeks` earlier (same source), with a
  conversation-clustered 95 % CI; `replay_errors`: cases the replay could not grade.
- `pass_rate_stalled`, replay weeks: the month-over-month change is not shown to be above
  `min_improvement` (its CI low ≤ min_improvement): "if it is not climbing month over month,
  the loop is broken". Weeks without a month-ago replay are not flagged.
- Logged-answers weeks keep the high-water rule below (a grow-only set of logged answers
  measures the set's composition more than the agent, so its month-over-month CI is shown, not used).
- **Improved** in a week: its pass rate beats `pass_rate_high` (the pass rate of the last
  improved week) by more than `min_improvement`; the first week with a pass rate counts as
  improved. With min_improvement = 0 that is a new all-time high. Not CI-based: a grow-only
  set shares most cases week to week, so weekly CIs are not independent and overlap nearly
  always. `pass_rate_stalled`: `stall_weeks` or more weeks since the last improved week
  (weeks without a snapshot count as not improved).
- `eval_set_stalled`: an earlier snapshot exists and this week's set is not larger than the
  last one before it (no snapshot this week: stalled), unless that one had reached `max_cases`.
- `input_drift`: `population_stability_index` of the intent mix, or of the channel mix,
  against the previous calendar week's > `psi_threshold` (null PSI without traffic on a side).
- `category_coverage`: categories with ≥ 1 case in the snapshot (both splits) / `categories`
  (default: the newest rubric's failure categories).
- `labels_imported`: labels imported in the week (Monday-based); `judge_kappa`: the κ of the
  week's month (Monday's month), n_compared-weighted over rubric versions.
Rows: every calendar week from an agent's first to last week in scores or snapshots.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from feedback_pipeline.frames import empty_frame, polars_schema
from feedback_pipeline.impact import loop_signals as signs
from feedback_pipeline.impact.drift import PSI_LARGE
from feedback_pipeline.impact.loop_flags import flags
from feedback_pipeline.impact.schemas import LoopHealth
from feedback_pipeline.rubrics import failure_categories


@dataclass(frozen=True)
class LoopHealthConfig:
    stall_weeks: int = 4
    min_improvement: float = 0.0  # a new high must beat the old one by more than this
    psi_threshold: float = PSI_LARGE
    max_cases: int | None = None  # EvalSetConfig.max_cases: a full set is not "stalled"
    categories: Sequence[str] | None = None  # None: the newest rubric's failure categories
    estimate_method: str = "hajek"  # quality_estimates method shown as failure_rate
    alpha: float = 0.05
    month_weeks: int = 4  # "month over month": the pass rate against this many weeks earlier


def _grid(*frames: pl.DataFrame) -> pl.DataFrame:
    """Every calendar week (Monday steps) from each agent's first to its last week."""
    weeks = pl.concat([f.select(pl.col("agent_id").cast(pl.String), pl.col("week").cast(pl.Date))
                       for f in frames])
    spans = weeks.group_by("agent_id").agg(first=pl.col("week").min(), last=pl.col("week").max())
    return (spans.select("agent_id", week=pl.date_ranges("first", "last", interval="1w"))
            .explode("week").sort(*signs.KEYS))


def loop_health(scores_weekly_mix: pl.DataFrame, estimates: pl.DataFrame | None, snapshots: pl.DataFrame,
                labels: pl.DataFrame | None, calibration: pl.DataFrame | None,
                config: LoopHealthConfig = LoopHealthConfig(), replay: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per agent and calendar week (the `LoopHealth` table): the loop's vital signs and flags."""
    mix = scores_weekly_mix.with_columns(pl.col("week").cast(pl.Date), pl.col("agent_id").cast(pl.String))
    snapshots = snapshots.with_columns(pl.col("week").cast(pl.Date), pl.col("agent_id").cast(pl.String))
    if replay is not None:
        replay = replay.with_columns(pl.col("week").cast(pl.Date), pl.col("agent_id").cast(pl.String))
    grid = _grid(mix, snapshots, *([replay] if replay is not None else []))
    if grid.is_empty():
        return empty_frame(LoopHealth)
    categories = config.categories if config.categories is not None else failure_categories()
    out = grid
    for part in (signs.traffic(mix), signs.psi(mix, "intent"), signs.psi(mix, "channel"),
                 signs.snapshot_stats(snapshots, categories), signs.label_counts(labels),
                 signs.pass_rates(signs.graded_cases(snapshots, replay), config.alpha, config.month_weeks),
                 signs.replay_errors(replay),
                 signs.failure_rates(estimates, config.estimate_method)):
        if part is not None:
            out = out.join(part.with_columns(pl.col("week").cast(pl.Date)), on=list(signs.KEYS), how="left")
    kappa = signs.monthly_kappa(calibration)
    out = out.with_columns(month=pl.col("week").dt.strftime("%Y-%m"))
    if kappa is not None:
        out = out.join(kappa, on="month", how="left")
    schema = polars_schema(LoopHealth)
    out = out.with_columns(
        *[pl.lit(None, dtype).alias(c) for c, dtype in schema.items() if c not in out.columns],
    ).with_columns(pl.col("n_traces", "labels_imported").fill_null(0))
    out = flags(out.sort(*signs.KEYS), config)
    return out.select([pl.col(c).cast(t) for c, t in schema.items()])
