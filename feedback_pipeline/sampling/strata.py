"""Strata of the annotation-queue design: which stratum a trace falls in, and their order.

Only the partition of traffic and its priority order live here; how many draws
each stratum gets is `allocation`, the draws themselves are `design`.
"""

import polars as pl

from feedback_pipeline.ingest.contract import ESCALATION_REASONS

STRATUM_KINDS: tuple[str, ...] = (
    "escalated", "thumbs_down", "low_score", "user_rewrote", "thumbs_up", "unrated",
)


def assign_strata(scores: pl.DataFrame) -> pl.DataFrame:
    """`scores` with a `stratum` column (first match wins: `escalated:<reason>`,
    `thumbs_down`, `low_score` (judge fail or deterministic low score), `user_rewrote`,
    `thumbs_up`, `unrated`); nulls read as False."""
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
