"""Preference pairs for fine-tuning teams (DPO/TRL conversational format), from the dev
split only, and their files `exports/preference_pairs/<agent>/<week>.jsonl`.

A pair file never holds a conversation of the held-out (test) split:
`check_no_heldout_leak` says so before anything is written. No Dagster here.
"""

from datetime import date
from pathlib import Path

import polars as pl

from feedback_pipeline.evalset.schemas import EvalSetSnapshots, PreferencePairs
from feedback_pipeline.files import atomic_write
from feedback_pipeline.frames import conform
from feedback_pipeline.redact import redact_texts


def dpo_pairs(snapshot_rows: pl.DataFrame, traces: pl.DataFrame, *, redact: bool = True,
              implicit_pass: str = "thumbs_up") -> pl.DataFrame:
    """Preference pairs (`PreferencePairs`, TRL conversational format) from the dev split only.

    A failing dev case whose user rewrote the request (`user_rewrote`) or that was
    escalated gives a pair when the conversation's next agent turn passed: `rejected` is
    the failing answer, `chosen` the next answer, `prompt` the context and user turn.
    The next turn passed when it is a case labeled pass (`chosen_evidence` =
    "human_label"), or, without a label, by `implicit_pass`: "thumbs_up" (thumbs up, not
    escalated, not rewritten), "no_complaint" (no thumbs down, not escalated, not
    rewritten) or "none" (labels only).
    """
    if implicit_pass not in ("thumbs_up", "no_complaint", "none"):
        raise ValueError(f"implicit_pass must be thumbs_up, no_complaint or none, not {implicit_pass!r}")
    rows = conform(snapshot_rows, EvalSetSnapshots)
    flags = traces.select("trace_id", pl.col("user_rewrote").fill_null(False),
                          pl.col("escalated").fill_null(False))
    failing = (rows.filter((pl.col("split") == "dev") & (pl.col("verdict") == "fail"))
               .join(flags, on="trace_id", how="inner")
               .filter(pl.col("user_rewrote") | pl.col("escalated") | (pl.col("source") == "escalation")))
    nxt = traces.select(
        "conversation_id", (pl.col("turn_index") - 1).alias("turn_index"),
        pl.col("trace_id").alias("chosen_trace_id"), pl.col("agent_response").alias("_chosen_text"),
        pl.col("thumbs").alias("_thumbs"), pl.col("escalated").fill_null(False).alias("_esc"),
        pl.col("user_rewrote").fill_null(False).alias("_rewrote"))
    labeled = rows.select(pl.col("trace_id").alias("chosen_trace_id"),
                          pl.col("verdict").alias("_next_verdict"))
    quiet = ~pl.col("_esc") & ~pl.col("_rewrote")
    implicit = {"thumbs_up": quiet & (pl.col("_thumbs") == "up"),
                "no_complaint": quiet & (pl.col("_thumbs").fill_null("") != "down"),
                "none": pl.lit(False)}[implicit_pass]
    evidence = (pl.when(pl.col("_next_verdict") == "pass").then(pl.lit("human_label"))
                .when(pl.col("_next_verdict").is_null() & implicit).then(pl.lit(f"implicit_{implicit_pass}")))
    pairs = (failing.join(nxt, on=["conversation_id", "turn_index"], how="inner")
             .join(labeled, on="chosen_trace_id", how="left")
             .with_columns(evidence.alias("chosen_evidence"))
             .filter(pl.col("chosen_evidence").is_not_null()))
    if redact and pairs.height:
        pairs = pairs.with_columns(redact_texts(pairs["_chosen_text"]))
    turn = pl.element().struct.field
    context = pl.col("context").list.eval(pl.concat_list(
        pl.struct(pl.lit("user").alias("role"), turn("user_message").alias("content")),
        pl.struct(pl.lit("assistant").alias("role"), turn("agent_response").alias("content")),
    ).explode())
    out = pairs.with_columns(
        pl.concat_list(context, _message("user", pl.col("user_message"))).alias("prompt"),
        _message("assistant", pl.col("_chosen_text")).alias("chosen"),
        _message("assistant", pl.col("agent_response")).alias("rejected"),
        pl.when(pl.col("user_rewrote")).then(pl.lit("user_rewrite"))
        .otherwise(pl.lit("escalation_resolved")).alias("pair_source"),
    )
    return conform(out, PreferencePairs).sort("case_id")


def check_no_heldout_leak(pairs: pl.DataFrame, snapshot_rows: pl.DataFrame) -> list[str]:
    """One message per pair whose conversation holds a held-out (test) case: [] means no leak."""
    test = snapshot_rows.filter(pl.col("split") == "test").select("conversation_id").unique()
    leaks = pairs.join(test, on="conversation_id", how="semi").sort("conversation_id", "case_id")
    return [f"DPO pair for case {r['case_id']} uses conversation {r['conversation_id']}, "
            "which holds a held-out (test) case" for r in leaks.iter_rows(named=True)]


def export_preference_pairs(exports_dir: Path, rows: pl.DataFrame, traces: pl.DataFrame | None,
                            week: date) -> tuple[int, list[str]]:
    """Pairs of the week's snapshot rows, per agent, in `<exports_dir>/preference_pairs/<agent>/<week>.jsonl`;
    returns (pairs, leak messages). Nothing is written when any pair would leak."""
    if traces is None or rows.is_empty():
        return 0, []
    pairs = dpo_pairs(rows, traces)
    leaks = check_no_heldout_leak(pairs, rows)
    if leaks:
        return pairs.height, leaks  # never write a file that leaks held-out conversations
    for (agent,), mine in pairs.partition_by("agent_id", as_dict=True).items():
        atomic_write(exports_dir / "preference_pairs" / agent / f"{week.isoformat()}.jsonl", mine.write_ndjson)
    return pairs.height, []


def _message(role: str, content: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), content.alias("content")))
