"""Candidate cases of a week: each labeled trace of the week or before, with its gold label,
its text and its conversation's earlier turns.

Gold labels + escalation labels + traces in, one candidate per trace out
(`EvalSetCandidates`). Which labels a week knows is `known_labels.py`; which candidates
a snapshot takes is `snapshot.py`.
"""

from datetime import date

import polars as pl

from feedback_pipeline.evalset.ids import case_id_expr
from feedback_pipeline.evalset.schemas import CONTEXT_DTYPE, EvalSetCandidates
from feedback_pipeline.frames import conform
from feedback_pipeline.weeks import week_end, week_start


def candidate_cases(gold: pl.DataFrame, traces: pl.DataFrame, escalation_labels: pl.DataFrame | None,
                    week: date | str, *, max_context_turns: int = 6) -> pl.DataFrame:
    """One row per labeled trace of `week` or earlier (`EvalSetCandidates`): its gold label and text.

    `gold` is `resolve_labels(human_labels)`; `escalation_labels` are `source =
    "escalation"` label rows, used only where no annotator labeled the trace under that
    rubric version. Per trace the newest rubric version with a gold label wins.
    `traces` (with `timestamp`) must hold the labeled traces' whole conversations (for the
    context). A label whose trace is not among `traces` from before the week's end (a
    later week's trace, labeled with a wrong date; a trace no longer in raw_traces) is
    no candidate of this week. `left_out_reason` is "unresolved_label" (annotators
    disagree, no adjudication), else null.
    """
    is_esc = pl.col("resolution") == "escalation"
    labels = gold.select(
        "trace_id", "rubric_version", "verdict", "failure_category", "resolution",
        pl.when(is_esc).then(pl.lit("escalation")).otherwise(pl.lit("annotation")).alias("source"))
    if escalation_labels is not None and escalation_labels.height:
        labels = pl.concat([labels, _escalations_without_gold(escalation_labels, labels)], how="vertical_relaxed")
    resolved = pl.col("resolution") != "unresolved"
    labels = (labels.sort("trace_id", resolved, rubric_rank(), "rubric_version")
              .unique("trace_id", keep="last", maintain_order=True))
    turns = (traces.filter(pl.col("timestamp") < week_end(week)).unique("trace_id", keep="first")
             .select("trace_id", "conversation_id", "turn_index", "agent_id", "user_id", "user_message",
                     "agent_response"))
    cases = labels.join(turns, on="trace_id", how="inner")
    context = (cases.select("trace_id", "conversation_id", pl.col("turn_index").alias("_turn"))
               .join(turns.select("conversation_id", "turn_index", "user_message", "agent_response"),
                     on="conversation_id")
               .filter(pl.col("turn_index") < pl.col("_turn"))
               .sort("trace_id", "turn_index")
               .group_by("trace_id").agg(
                   pl.struct("turn_index", "user_message", "agent_response")
                   .tail(max_context_turns).alias("context")))
    out = cases.join(context, on="trace_id", how="left").with_columns(
        context_or_empty("context"),
        case_id_expr(pl.col("trace_id"), pl.col("rubric_version")).alias("case_id"),
        pl.lit(week_start(week).date()).alias("first_seen_week"),
        pl.when(~resolved).then(pl.lit("unresolved_label")).alias("left_out_reason"),
    )
    return conform(out, EvalSetCandidates).sort("trace_id")


def _escalations_without_gold(escalation_labels: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The current escalation label of each (trace, rubric version) no annotator labeled."""
    esc = escalation_labels
    if "is_current" in esc.columns:
        esc = esc.filter(pl.col("is_current"))
    if "source" in esc.columns:
        esc = esc.filter(pl.col("source") == "escalation")
    return (esc.sort("labeled_at").unique(["trace_id", "rubric_version"], keep="last")
            .join(labels, on=["trace_id", "rubric_version"], how="anti")
            .select("trace_id", "rubric_version", "verdict", "failure_category",
                    pl.lit("escalation").alias("resolution"), pl.lit("escalation").alias("source")))


def rubric_rank(column: str = "rubric_version") -> pl.Expr:
    """v2 < v10 (numeric part of "vN"); other names sort after, as text (tie-broken by the caller)."""
    return pl.col(column).str.extract(r"^v(\d+)$").cast(pl.Int64).fill_null(2**62)


def context_or_empty(column: str) -> pl.Expr:
    """The context column with a missing context as an empty list."""
    return pl.col(column).fill_null(pl.lit([], dtype=CONTEXT_DTYPE)).cast(CONTEXT_DTYPE)
