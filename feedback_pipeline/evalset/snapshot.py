"""One agent's snapshot of one week: the previous snapshot carried (relabeled where a newer
gold label says so) plus the new cases this week adds.

A snapshot is its own rows (one per case per week), so past snapshots are never edited:
a corrected gold label or a newer rubric version shows up as a relabel in the next
week's snapshot. Everything is deterministic (hashes, MinHash seeds, sort orders), so the
same inputs give the same content hash. The steps are elsewhere: candidates
(`candidates.py`), dedup (`dedup.py`), budget and strata (`selection.py`), redaction
(`redaction.py`); hashing, manifests and diffs of the result are `canonical.py`,
`manifest.py`, `diff.py`. No Dagster, no files.
"""

from datetime import date

import polars as pl

from feedback_pipeline.evalset.candidates import context_or_empty, rubric_rank
from feedback_pipeline.evalset.config import EvalSetConfig
from feedback_pipeline.evalset.dedup import near_duplicates
from feedback_pipeline.evalset.ids import stable_split
from feedback_pipeline.evalset.redaction import previous_user_turn, redact_answers_and_context
from feedback_pipeline.evalset.schemas import CONTEXT_DTYPE, EvalSetSnapshots  # noqa: F401 (CONTEXT_DTYPE: test_replay)
from feedback_pipeline.evalset.selection import fill_canary, skip_reason, stratified, target_size
from feedback_pipeline.frames import conform, empty_frame, polars_schema
from feedback_pipeline.redact import redact_texts
from feedback_pipeline.weeks import week_start

# What a case's label is: taken over whole from the newest gold label on a relabel.
LABEL_FIELDS = ("verdict", "failure_category", "rubric_version", "source", "resolution")


def build_snapshot(previous: pl.DataFrame | None, candidates: pl.DataFrame, agent_id: str,
                   week: date | str, config: EvalSetConfig = EvalSetConfig()) -> tuple[pl.DataFrame, dict]:
    """(this week's snapshot rows (`EvalSetSnapshots`), a report of what happened).

    Every case of `previous` (the agent's latest earlier snapshot) stays with its case_id,
    split, canary flag and text; its label follows the newest gold label. New candidates
    are redacted (answers and older context only once chosen, to the same result: see
    `redaction.py`), near-duplicates collapsed, capped per user and chosen by failure
    category within the week's budget. The report: counts (n_cases, n_added, ...),
    `left_out_by_reason` and `left_out` (a frame: trace_id, case_id, reason, duplicate_of).
    """
    week = week_start(week).date()
    prev = (conform(previous, EvalSetSnapshots) if previous is not None
            else empty_frame(EvalSetSnapshots)).filter(pl.col("agent_id") == agent_id)
    if prev.height and prev["week"].max() >= week:
        raise ValueError(f"previous snapshot of {agent_id} is from {prev['week'].max()}, "
                         f"not before {week}: pass the latest snapshot of an earlier week")
    cands = candidates.filter(pl.col("agent_id") == agent_id)
    carried, n_relabeled = _relabel(prev, cands)
    fresh = cands.join(prev.select("trace_id"), on="trace_id", how="anti")
    n_new_candidates = fresh.height
    left_out = [fresh.filter(pl.col("left_out_reason").is_not_null())
                .select("trace_id", "case_id", pl.col("left_out_reason").alias("reason"))]
    fresh = raw = fresh.filter(pl.col("left_out_reason").is_null())
    if config.redact_pii and fresh.height:  # what dedup reads now; answers and context once chosen
        fresh = fresh.with_columns(redact_texts(fresh["user_message"]),
                                   previous_user_turn(fresh).alias("_previous_user"))
    fresh = near_duplicates(carried, fresh, config.dedup_threshold).with_columns(
        pl.coalesce("user_id", "case_id").alias("_user"), pl.lit(week).alias("first_seen_week"))
    fresh = fresh.with_columns(skip_reason(config.max_new_per_user))
    target = target_size(prev.height, config)
    chosen, over = stratified(carried, fresh.filter(pl.col("reason").is_null()),
                              max(0, target - prev.height), config.pass_weight)
    if config.redact_pii and chosen.height:
        chosen = redact_answers_and_context(chosen, raw, "case_id").with_columns(context_or_empty("context"))
    left_out += [fresh.filter(pl.col("reason").is_not_null())
                 .select("trace_id", "case_id", "reason", "duplicate_of"),
                 over.select("trace_id", "case_id", pl.lit("over_budget").alias("reason"))]
    split_of = carried.select("conversation_id", "split").unique("conversation_id")
    added = chosen.join(split_of, on="conversation_id", how="left").with_columns(
        pl.coalesce("split", stable_split(pl.col("conversation_id"), config.test_share)).alias("split"),
        pl.lit(False).alias("canary"))
    rows = pl.concat([carried, conform(added, EvalSetSnapshots)]).with_columns(
        pl.lit(f"{agent_id}@{week}").alias("snapshot_id"), pl.lit(agent_id).alias("agent_id"),
        pl.lit(week).alias("week"))
    rows = fill_canary(rows, config.canary_size).sort("first_seen_week", "case_id")
    left = pl.concat(left_out, how="diagonal_relaxed")
    report = {
        "snapshot_id": f"{agent_id}@{week}", "n_cases": rows.height, "n_previous": prev.height,
        "n_added": added.height, "n_relabeled": n_relabeled, "target_size": target,
        "n_canary": int(rows["canary"].sum()), "n_candidates_new": n_new_candidates,
        "added_by_stratum": dict(sorted(_counts(chosen, "_stratum").items())),
        "left_out_by_reason": dict(sorted(_counts(left, "reason").items())),
        "left_out": left.sort("reason", "case_id"),
    }
    return conform(rows, EvalSetSnapshots), report


def _relabel(prev: pl.DataFrame, cands: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Previous cases with their newest gold label (never an older rubric version's)."""
    new = cands.filter(pl.col("left_out_reason").is_null()).select(
        "trace_id", *[pl.col(c).alias(f"_new_{c}") for c in LABEL_FIELDS])
    joined = prev.join(new, on="trace_id", how="left")
    take = (pl.col("_new_verdict").is_not_null()
            & (rubric_rank("_new_rubric_version") >= rubric_rank("rubric_version")))
    changed = take & pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"_new_{c}"))
                                       for c in ("verdict", "failure_category", "rubric_version"))
    out = joined.with_columns(changed.alias("_changed"),
                              *[pl.when(take).then(f"_new_{c}").otherwise(c).alias(c) for c in LABEL_FIELDS])
    return out.select(list(polars_schema(EvalSetSnapshots))), int(out["_changed"].sum())


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if not frame.height:
        return {}
    return {k: int(v) for k, v in frame.group_by(column).len().iter_rows()}
