"""Filing rejects: every record that cannot be loaded, under a week, with a reason a person can act on.

Gathers the records `rules.py` rejected (`checked`), trace_id conflicts
(`duplicates.py`), converted-source rejects (`source_rejects`: orphan spans, traces
without a user message, unparseable attributes) and unreadable files into
`parsed_quarantine`, in the columns of `IngestQuarantine` (less `quarantined_at`,
stamped at write time). Detecting the problems is the other modules' job.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.ingest.contract import timestamp_sql
from feedback_pipeline.ingest.duplicates import RAW_TEXT_MAX_CHARS
from feedback_pipeline.ingest.landing import fallback_week
from feedback_pipeline.ingest.schemas import IngestQuarantine
from feedback_pipeline.weeks import week_sql


def quarantine_columns() -> dict:
    """The parse's quarantine rows: IngestQuarantine's columns without the write stamp."""
    return {k: v for k, v in polars_schema(IngestQuarantine).items() if k != "quarantined_at"}


def create_reject_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE file_problems (source_file VARCHAR, reason VARCHAR, fallback_week DATE)")
    con.execute("CREATE OR REPLACE TEMP TABLE source_rejects (week DATE, source_file VARCHAR, source_line BIGINT, "
                "trace_id VARCHAR, field VARCHAR, reason VARCHAR, raw_text VARCHAR)")


def file_problem(con: duckdb.DuckDBPyConnection, name: str, path: Path, exc: Exception, advice: str) -> None:
    """Quarantine a whole file that could not be read, with what went wrong and what to do."""
    first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
    con.execute("INSERT INTO file_problems VALUES (?, ?, ?)",
                [name, f"file could not be read ({type(exc).__name__}: {first_line}); {advice}", fallback_week(path)])


def collect_quarantine(con: duckdb.DuckDBPyConnection) -> None:
    """Every rejected record, filed under its own week or, with no usable timestamp,
    under its file's most common week (else the file's modification week)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE parsed_quarantine AS
        WITH file_mode AS (
            SELECT source_file, mode(week) AS mode_week FROM parsed_keys GROUP BY source_file
        ), rejected AS (
            SELECT {week_sql(timestamp_sql("ts_text"))} AS week,
                   source_file, source_line, trace_id_text AS trace_id, problems[1].field AS field,
                   kind || ' ' || source_line || ': '
                   || array_to_string(list_transform(problems, x -> x.msg), '; ') AS reason,
                   left(line, {RAW_TEXT_MAX_CHARS}) AS raw_text
            FROM checked WHERE len(problems) > 0
            UNION ALL BY NAME SELECT * FROM conflicts
            UNION ALL BY NAME SELECT week, source_file, source_line, trace_id, field, reason,
                                     left(raw_text, {RAW_TEXT_MAX_CHARS}) AS raw_text FROM source_rejects
            UNION ALL BY NAME
            SELECT NULL::DATE AS week, source_file, NULL::BIGINT AS source_line, NULL AS trace_id,
                   'file' AS field, reason, NULL AS raw_text
            FROM file_problems
        )
        SELECT coalesce(r.week, m.mode_week, f.fallback_week)::DATE AS week,
               r.source_file, r.source_line::BIGINT AS source_line, r.trace_id, r.field, r.reason, r.raw_text
        FROM rejected r
        LEFT JOIN file_mode m USING (source_file)
        LEFT JOIN file_weeks f USING (source_file)
        ORDER BY r.source_file, r.source_line
    """)
    for table in ("checked", "conflicts", "file_problems", "file_weeks", "source_rejects"):
        con.execute(f"DROP TABLE {table}")
