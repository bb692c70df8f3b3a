"""Eval-set files for analysts and fine-tuning teams: snapshot folders and DPO pairs.

A published snapshot folder is never overwritten (same hash: left alone; another hash:
ExportConflictError). Shared publishing (tables, the analyst database) is in
`feedback_pipeline.publish`. No Dagster here.
"""

import json
import shutil
import uuid
from pathlib import Path

import polars as pl

from feedback_pipeline.evalset.snapshot import (
    SNAPSHOT_COLUMNS, canonical_lines, conform, lines_hash,
)
from feedback_pipeline.publish import PARTITION_PATTERN, safe_name
from feedback_pipeline.redact import redact_texts


class ExportConflictError(RuntimeError):
    """An export already exists with different content; published snapshots are never overwritten."""


def export_snapshot(rows: pl.DataFrame, manifest: dict, exports_dir: str | Path) -> Path:
    """Write `eval_sets/<agent_id>/<week>/` (Parquet, JSONL, manifest.json); return the folder.

    The folder is staged whole and renamed into place. If it exists with the same
    content hash nothing is written; with another hash, ExportConflictError.
    """
    lines = canonical_lines(rows)
    actual = lines_hash(lines)
    if actual != manifest["content_hash"]:
        raise ValueError(f"rows hash to {actual} but the manifest says {manifest['content_hash']}")
    exports_dir = Path(exports_dir)
    agent, week = safe_name(manifest["agent_id"], PARTITION_PATTERN), safe_name(manifest["week"], PARTITION_PATTERN)
    target = exports_dir / "eval_sets" / agent / week
    if target.exists():
        _check_same(target, actual)
        return target
    staging = exports_dir / ".staging" / f"{manifest['snapshot_id']}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        conform(rows, SNAPSHOT_COLUMNS).sort("case_id").write_parquet(staging / "cases.parquet")
        (staging / "cases.jsonl").write_text("".join(f"{line}\n" for line in lines), "utf-8")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)  # atomic; fails if another writer got there first
        except OSError:
            _check_same(target, actual)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_same(target: Path, expected_hash: str) -> None:
    try:
        existing = json.loads((target / "manifest.json").read_text("utf-8"))["content_hash"]
    except (OSError, ValueError, KeyError) as exc:
        raise ExportConflictError(f"{target} exists but its manifest.json is unreadable ({exc}); "
                                  "inspect it by hand, it is never overwritten") from exc
    if existing != expected_hash:
        raise ExportConflictError(
            f"{target} was published with content hash {existing}; this run produced {expected_hash}. "
            "A published snapshot is never overwritten: find out why the inputs changed "
            "(late labels? pass labels as of the week's end), or publish a new week.")


# ---------------------------------------------------------------- preference pairs

_MESSAGE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
DPO_COLUMNS: dict[str, pl.DataType] = {
    "prompt": _MESSAGE, "chosen": _MESSAGE, "rejected": _MESSAGE,
    "pair_source": pl.String, "chosen_evidence": pl.String, "case_id": pl.String,
    "trace_id": pl.String, "chosen_trace_id": pl.String, "conversation_id": pl.String,
    "agent_id": pl.String, "snapshot_id": pl.String, "rubric_version": pl.String,
    "failure_category": pl.String,
}


def dpo_pairs(snapshot_rows: pl.DataFrame, traces: pl.DataFrame, *, redact: bool = True,
              implicit_pass: str = "thumbs_up") -> pl.DataFrame:
    """Preference pairs (TRL conversational format) from the dev split only (DPO_COLUMNS).

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
    rows = conform(snapshot_rows, SNAPSHOT_COLUMNS)
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
    return conform(out, DPO_COLUMNS).sort("case_id")


def check_no_heldout_leak(pairs: pl.DataFrame, snapshot_rows: pl.DataFrame) -> list[str]:
    """One message per pair whose conversation holds a held-out (test) case: [] means no leak."""
    test = snapshot_rows.filter(pl.col("split") == "test").select("conversation_id").unique()
    leaks = pairs.join(test, on="conversation_id", how="semi").sort("conversation_id", "case_id")
    return [f"DPO pair for case {r['case_id']} uses conversation {r['conversation_id']}, "
            "which holds a held-out (test) case" for r in leaks.iter_rows(named=True)]


def _message(role: str, content: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), content.alias("content")))
