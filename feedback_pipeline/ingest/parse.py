"""Landing files -> typed trace rows + quarantine rows, in bulk, inside one DuckDB connection.

The orchestration only: which path each file takes and the accounting at the end.
The caller passes a connection (in-memory in tests, the warehouse's in the asset, so
typed rows never leave DuckDB) and gets temp tables back. A contract file takes the
Arrow fast path (`arrow_fast.py`) or the line path (`lines.py`, `typed.py`,
`rules.py`); a tracing tool's export is converted to typed contract rows by `sources/`
and joins the fast path's rows, so both share validation (a row breaking a value rule
takes the line path), de-duplication (`duplicates.py`) and quarantine (`quarantine.py`). Nothing is dropped: a record is
loaded, a counted duplicate, or quarantined (converted spans: also held, see `sources/`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.ingest.arrow_fast import FAST_SCHEMA, load_clean_file, prefetched
from feedback_pipeline.ingest.duplicates import resolve_duplicates
from feedback_pipeline.ingest.landing import UNREADABLE, fallback_week
from feedback_pipeline.ingest.listing import landing_files
from feedback_pipeline.ingest.lines import NOT_BLANK, create_lines, load_lines
from feedback_pipeline.ingest.quarantine import (
    collect_quarantine,
    create_reject_tables,
    file_problem,
    quarantine_columns,
)
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.ingest.sources import UNKNOWN, convert_sources, split_by_format
from feedback_pipeline.ingest.typed import type_records, typed_columns


@dataclass
class LandingParse:
    """What the landing folder held, as temp tables in the connection, plus counts."""

    files: list[str]
    records_read: int = 0  # non-blank lines, Parquet rows, converted turns and their rejects, all weeks
    skipped_files: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # file -> detected format
    spans: pl.DataFrame | None = None  # per converted file: the span accounting (`sources/`)
    # temp tables/views: parsed_traces (RawTraces), parsed_keys (its week, source_file,
    # trace_id), typed_keys (the same for every typed record, duplicates and conflicts
    # included), span_keys (every converted span's file, trace_id, week),
    # parsed_quarantine, parsed_duplicates (week, source_file, trace_id)


def parse_landing(con: duckdb.DuckDBPyConnection, landing_dir: Path,
                  only: list[str] | None = None) -> LandingParse:
    """Read, validate, type and de-duplicate every landing file (or the `only` ones,
    relative names) into temp tables."""
    con.execute("SET TimeZone='UTC'")
    files, skipped = landing_files(landing_dir)
    if only is not None:
        wanted = set(only)
        files = [p for p in files if str(p.relative_to(landing_dir)) in wanted]
    create_lines(con)
    create_reject_tables(con)
    contract, foreign, formats = split_by_format(landing_dir, files)
    names, fast_tables = [], []
    for path, data, table in prefetched(contract):
        name = str(path.relative_to(landing_dir))
        names.append(name)
        try:
            if isinstance(table, Exception):
                raise table
            if table is not None:
                fast_tables.append(load_clean_file(con, data, table, name))
                continue
            load_lines(con, path, name)
        except UNREADABLE as exc:  # the file is quarantined whole; a bug still fails the run
            file_problem(con, name, path, exc, "re-export it as JSON Lines (optionally gzip) or Parquet")
    for path in files:
        name = str(path.relative_to(landing_dir))
        if formats[name] == UNKNOWN:
            names.append(name)
            file_problem(con, name, path, ValueError("no known record shape in its first record"),
                         "expected contract JSON Lines / Parquet, or an OTLP, Phoenix, Langfuse or LangSmith "
                         "export; pin its folder's format in landing/sources.yaml if it is one")
    spans, converted = convert_sources(con, landing_dir, foreign, formats)
    if converted is not None:
        fast_tables.append(converted)
    names += [str(p.relative_to(landing_dir)) for p in foreign]
    con.register("file_weeks_df", pl.DataFrame(
        {"source_file": [str(p.relative_to(landing_dir)) for p in files],
         "fallback_week": [fallback_week(p) for p in files]},
        schema={"source_file": pl.String, "fallback_week": pl.Date},
    ))
    con.execute("CREATE OR REPLACE TEMP TABLE file_weeks AS SELECT * FROM file_weeks_df")
    con.unregister("file_weeks_df")

    # Clean files stay Arrow, typed by a view in the one scan that loads them: copying
    # them into a temp table first cost as much as the load itself.
    fast = pa.concat_tables(fast_tables) if fast_tables else FAST_SCHEMA.empty_table()
    con.register("fast_rows_arrow", fast)
    con.execute(f"CREATE OR REPLACE TEMP VIEW typed_fast AS SELECT {typed_columns('', 'extra')} FROM fast_rows_arrow")
    records_read = fast.num_rows + con.execute(f"""
        SELECT (SELECT count(*) FROM lines WHERE {NOT_BLANK}) + (SELECT count(*) FROM source_rejects)""").fetchone()[0]
    type_records(con)
    resolve_duplicates(con)
    collect_quarantine(con)
    con.execute("DROP TABLE lines")
    accounted = con.execute("""
        SELECT (SELECT count(*) FROM parsed_keys) + (SELECT count(*) FROM parsed_duplicates)
             + (SELECT count(*) FROM parsed_quarantine WHERE source_line IS NOT NULL)""").fetchone()[0]
    if accounted != records_read:  # a bug, never bad input: refuse to load a lossy result
        raise RuntimeError(f"ingest accounting broken: read {records_read} records, accounted {accounted}")
    return LandingParse(files=sorted(names), records_read=records_read, skipped_files=skipped,
                        formats=formats, spans=spans)


def parse_landing_frames(landing_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, LandingParse]:
    """The same as `parse_landing` on a private connection, returned as Polars frames
    (traces, quarantine, duplicates) — for tests and small tools."""
    with duckdb.connect() as con:
        result = parse_landing(con, landing_dir)
        traces = con.sql("SELECT * FROM parsed_traces ORDER BY source_file, source_line, trace_id").pl()
        quarantine = con.sql("SELECT * FROM parsed_quarantine").pl()
        duplicates = con.sql("SELECT * FROM parsed_duplicates ORDER BY source_file").pl()
    return (
        traces.cast(polars_schema(RawTraces)),
        quarantine.cast(quarantine_columns()),
        duplicates,
        result,
    )

