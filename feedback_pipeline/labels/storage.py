"""The label import's warehouse side: what it reads, what it writes, and the column renames.

`human_labels` and `label_quarantine` once called `source_line` `source_row`, and
`label_quarantine` called `raw_text` `raw_record` (ingest's quarantine used the new
names); `migrate_label_tables` renames them in place, so an older warehouse keeps
working. No rules here: the import itself is `importing.py`'s.
"""

from dataclasses import dataclass

import duckdb
import polars as pl

from feedback_pipeline.frames import conform, empty_frame, polars_schema
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.labels.schemas import HumanLabels, LabelQuarantine
from feedback_pipeline.warehouse import replace_table, table_columns, table_exists, transaction, write_attempts

# Old name → new name, per table.
RENAMED_COLUMNS: dict[str, dict[str, str]] = {
    "human_labels": {"source_row": "source_line"},
    "label_quarantine": {"source_row": "source_line", "raw_record": "raw_text"},
}
# The raw_traces columns the import reads.
_TRACE_COLUMNS = {c: t for c, t in polars_schema(RawTraces).items()
                  if c in ("trace_id", "timestamp", "week", "escalated", "escalation_reason")}


def migrate_label_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Rename the old column names of an existing human_labels / label_quarantine in place."""
    for table, renames in RENAMED_COLUMNS.items():
        if not table_exists(con, table):
            continue
        have = table_columns(con, table)
        for old, new in renames.items():
            if old in have and new not in have:
                con.execute(f'ALTER TABLE {table} RENAME COLUMN "{old}" TO "{new}"')


@dataclass(frozen=True)
class Warehoused:
    """What the import needs from the warehouse (empty frames where a table is missing)."""

    history: pl.DataFrame | None  # human_labels, None before the first import
    quarantine: pl.DataFrame  # label_quarantine
    traces: pl.DataFrame  # raw_traces: trace_id, timestamp, week, escalated, escalation_reason

    def imported_hashes(self) -> set[str]:
        """file_sha256 of every file imported or refused before."""
        seen = set(self.quarantine["file_sha256"].drop_nulls().to_list())
        if self.history is not None:
            seen |= set(self.history["file_sha256"].drop_nulls().to_list())
        return seen


def read_label_inputs(con: duckdb.DuckDBPyConnection) -> Warehoused:
    """human_labels, label_quarantine and the traces' ids, times, weeks and escalations."""
    history = (conform(con.execute("SELECT * FROM human_labels").pl(), HumanLabels)
               if table_exists(con, "human_labels") else None)
    quarantine = (conform(con.execute("SELECT * FROM label_quarantine").pl(), LabelQuarantine)
                  if table_exists(con, "label_quarantine") else empty_frame(LabelQuarantine))
    traces = (con.execute(f"SELECT {', '.join(_TRACE_COLUMNS)} FROM raw_traces").pl()
              .cast(_TRACE_COLUMNS) if table_exists(con, "raw_traces")
              else pl.DataFrame(schema=_TRACE_COLUMNS))
    return Warehoused(history, quarantine, traces)


def write_label_tables(con: duckdb.DuckDBPyConnection, history: pl.DataFrame, quarantine: pl.DataFrame,
                       agreement: pl.DataFrame) -> None:
    """human_labels, label_quarantine and label_agreement, replaced together in one transaction."""
    for attempt in write_attempts():
        with attempt, transaction(con):
            replace_table(con, "human_labels", conform(history, HumanLabels), atomic=False)
            replace_table(con, "label_quarantine", conform(quarantine, LabelQuarantine), atomic=False)
            replace_table(con, "label_agreement", agreement, atomic=False)
