"""Which weeks new, changed or removed landing files touch, so only those weeks are ingested.

The landing sensor only lists files (no parsing in a sensor tick); the `landing_scan`
asset reads the timestamps of what changed and remembers, per file fingerprint, the
weeks its records fall in (table `landing_scan`). A changed or removed file touches
the weeks it held before and the weeks it holds now. Typing and validating records
is the ingest's job, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.frames import empty_frame
from feedback_pipeline.ingest.contract import timestamp_sql
from feedback_pipeline.ingest.manifest import fingerprints
from feedback_pipeline.ingest.schemas import LandingScan
from feedback_pipeline.weeks import week_sql

SCAN_TABLE = "landing_scan"
_KEY = ["source_file", "size_bytes", "modified_ns", "inode"]


@dataclass(frozen=True)
class ScanResult:
    weeks_changed: list[str]  # ISO Mondays, sorted
    files_changed: list[str]
    files_removed: list[str]
    files_unchanged: int


def file_weeks(path: Path, con: duckdb.DuckDBPyConnection) -> list[date]:
    """The weeks of the record timestamps in one landing file (unreadable records are
    skipped here: the ingest quarantines them). Contract files by their `timestamp`;
    a tracing tool's export by any OTLP/Langfuse/LangSmith/Phoenix start time field."""
    if path.name.endswith(".parquet"):
        try:
            names = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()}
        except duckdb.Error:
            return []
        column = next((c for c in ("timestamp", "start_time", "startTime", "timestamp_start") if c in names), None)
        if column is None:
            return []
        cast = f'CAST("{column}" AS VARCHAR)'
        sql = f"SELECT DISTINCT {week_sql(timestamp_sql(cast))} FROM read_parquet(?)"
    else:
        # Any ISO timestamp or epoch-nanosecond start time the line carries, by regex:
        # cheap, format-agnostic, and over-inclusive at worst (an extra week is re-ingested, never a lost one).
        sql = f"""
            WITH lines AS (SELECT line FROM read_csv(?, columns={{'line': 'VARCHAR'}}, delim='\x1f', quote='',
                           escape='', header=false, auto_detect=false, ignore_errors=true, compression='auto')),
                 stamps AS (
                    SELECT unnest(regexp_extract_all(line,
                        '"(?:timestamp|startTime|start_time|startTimeUnixNano|start_time_unix_nano)"\\s*:\\s*"?([0-9][0-9T:.+Z -]*)"?', 1)) AS s
                    FROM lines)
            SELECT DISTINCT coalesce(
                {week_sql(timestamp_sql('s'))},
                {week_sql("to_timestamp(TRY_CAST(s AS HUGEINT) / 1e9)")})
            FROM stamps"""
    try:
        found = con.execute(sql, [str(path)]).fetchall()
    except duckdb.Error:
        return []
    return sorted({w for (w,) in found if w is not None})


def scan_landing(con: duckdb.DuckDBPyConnection, landing: Path, files: list[Path]) -> ScanResult:
    """Compare the landing folder with the last scan, read what changed, store the new state.
    The caller holds the transaction."""
    current = fingerprints(landing, files)
    con.register("_scan_shape", empty_frame(LandingScan))  # the table's one shape: its Pandera model
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {SCAN_TABLE} AS SELECT * FROM _scan_shape")
    finally:
        con.unregister("_scan_shape")
    previous = con.execute(f"SELECT * EXCLUDE (scanned_at) FROM {SCAN_TABLE}").pl()
    changed = current.join(previous.select(_KEY), on=_KEY, how="anti")
    gone = previous.join(current.select("source_file"), on="source_file", how="anti")["source_file"].to_list()
    old_weeks = previous.filter(pl.col("source_file").is_in([*changed["source_file"], *gone]))["weeks"]
    # Files are read on a scratch connection: a file DuckDB cannot read must not abort the
    # caller's transaction (its error is caught and the file skipped here).
    with duckdb.connect() as reader:
        reader.execute("SET TimeZone='UTC'")
        weeks_now = [file_weeks(landing / name, reader) for name in changed["source_file"]]
    touched = {w for ws in old_weeks.to_list() for w in (ws or [])} | {w for ws in weeks_now for w in ws}
    names = [*changed["source_file"].to_list(), *gone]
    con.execute(f"DELETE FROM {SCAN_TABLE} WHERE list_contains(?, source_file)", [names])
    rows = changed.with_columns(weeks=pl.Series(weeks_now, dtype=pl.List(pl.Date)))
    con.register("_scanned", rows)
    try:
        con.execute(f"INSERT INTO {SCAN_TABLE} SELECT *, now() FROM _scanned")
    finally:
        con.unregister("_scanned")
    return ScanResult(weeks_changed=sorted(w.isoformat() for w in touched),
                      files_changed=changed["source_file"].to_list(), files_removed=gone,
                      files_unchanged=current.height - changed.height)
