"""The eval-set stage's warehouse reads and writes: what a week's build reads (labels known
by the week's end, their traces, the previous snapshots, the stored manifests) and the
week's rows it replaces.

SQL and the calls that decide what to read next; the building itself is `week.py`.
"""

from dataclasses import dataclass
from datetime import date

import duckdb
import polars as pl

from feedback_pipeline.evalset.candidates import candidate_cases
from feedback_pipeline.evalset.known_labels import labels_known_by
from feedback_pipeline.labels.gold import resolve_labels
from feedback_pipeline.warehouse import read_week, replace_week_frame, table_exists, transaction, write_attempts
from feedback_pipeline.weeks import week_end

# What candidate_cases and dpo_pairs read of a trace; the other columns (tool calls, extra
# JSON, ...) made the read half as slow again.
TRACE_COLUMNS = ("trace_id", "conversation_id", "turn_index", "timestamp", "agent_id", "user_id",
                 "user_message", "agent_response", "thumbs", "escalated", "user_rewrote")


@dataclass(frozen=True)
class WeekInputs:
    candidates: pl.DataFrame | None  # None: no labels at all
    traces: pl.DataFrame | None  # the labeled traces' conversations, up to the week's end
    previous: pl.DataFrame  # each agent's latest snapshot of an earlier week
    stored: dict[str, dict]  # the week's manifests already written, by snapshot_id
    labels_outside_week: int  # labeled traces known by the week's end but not of it (or gone)


def load_week(con: duckdb.DuckDBPyConnection, week: date) -> WeekInputs:
    """What building `week`'s snapshots reads from the warehouse."""
    history = con.execute("SELECT * FROM human_labels").pl() if table_exists(con, "human_labels") else None
    candidates, traces, previous, outside = None, None, pl.DataFrame(), 0
    if history is not None and not history.is_empty():
        labels = labels_known_by(history, week_end(week))
        gold = resolve_labels(labels)
        escalations = labels.filter(pl.col("is_current") & (pl.col("source") == "escalation"))
        labeled = pl.concat([gold.select("trace_id"), escalations.select("trace_id")])
        traces = _conversations_of(con, labeled, week)
        candidates = candidate_cases(gold, traces, escalations, week)
        outside = labeled.unique().join(candidates, on="trace_id", how="anti").height
        previous = con.execute("""
            SELECT * FROM eval_set_snapshots WHERE week < ?
            QUALIFY week = max(week) OVER (PARTITION BY agent_id)
        """, [week]).pl() if table_exists(con, "eval_set_snapshots") else pl.DataFrame()
    existing = read_week(con, "eval_set_manifests", week)
    stored = {r["snapshot_id"]: r for r in existing.iter_rows(named=True)} if existing.height else {}
    return WeekInputs(candidates, traces, previous, stored, outside)


def _conversations_of(con: duckdb.DuckDBPyConnection, labeled: pl.DataFrame, week: date) -> pl.DataFrame:
    """The traces (TRACE_COLUMNS) before the week's end of every conversation holding a labeled trace."""
    con.register("_labeled", labeled)
    try:
        return con.execute(f"""
            SELECT {", ".join(TRACE_COLUMNS)} FROM raw_traces WHERE timestamp < ? AND conversation_id IN (
                SELECT conversation_id FROM raw_traces JOIN _labeled USING (trace_id))
        """, [week_end(week)]).pl()
    finally:
        con.unregister("_labeled")


def write_week(con: duckdb.DuckDBPyConnection, week: date, rows: pl.DataFrame, manifests: pl.DataFrame) -> None:
    """Replace the week's `eval_set_snapshots` and `eval_set_manifests` rows, together."""
    for attempt in write_attempts():
        with attempt, transaction(con):
            replace_week_frame(con, "eval_set_snapshots", week, rows, atomic=False)
            replace_week_frame(con, "eval_set_manifests", week, manifests, atomic=False)
