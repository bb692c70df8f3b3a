"""Which landing files a week's ingest must read: a manifest of the files already parsed.

Without it every weekly run re-reads every landing file ever dropped (a year of
history to load one week). The manifest remembers, per file fingerprint (size,
modification time, inode: the quick check rsync and make use), the weeks its
records fall in, and indexes the hash of every typed trace_id with its week. A
week's run then reads: new or changed files, files with records of that week, and
any other file holding a trace_id that also occurs in this week — so a trace_id
re-sent with another timestamp (another week) is still seen as a conflict in both
weeks' runs, exactly as if every file had been read.

Converted tracing exports index every span's trace_id (temp table `span_keys`), so
a trace whose spans sit in several files or weeks is re-assembled from all of them.

Pure functions over a DuckDB connection; the caller holds the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.warehouse import table_exists

MANIFEST = "landing_manifest"
TRACE_INDEX = "landing_trace_index"
# DuckDB's hash() may change between releases: the index is rebuilt when it does.
HASH_VERSION = f"duckdb-hash-{duckdb.__version__}"

# Every typed record's and every converted span's trace_id, week and file.
_KEYS = ("(SELECT trace_id, week, source_file FROM typed_keys "
         "UNION ALL SELECT trace_id, week, source_file FROM span_keys)")

# Two weeks ingested at once on a DuckLake may both index a new file (same content, same
# rows): the manifest is read one row per file, and the next change of the file rewrites it.
_ONE_ROW_PER_FILE = (f"SELECT * FROM {MANIFEST} "
                     "QUALIFY row_number() OVER (PARTITION BY source_file ORDER BY indexed_at DESC) = 1")

_FINGERPRINT_SCHEMA = {"source_file": pl.String, "size_bytes": pl.Int64,
                       "modified_ns": pl.Int64, "inode": pl.Int64}


@dataclass(frozen=True)
class WeekRead:
    """What one week's run parsed (temp tables in the connection) and why."""

    parsed: object  # parse.LandingParse
    current: pl.DataFrame  # fingerprints of every landing file now
    plan: "ReadPlan"
    sharing: list[str]  # files re-read because they share a trace_id with the week


def parse_week(con: duckdb.DuckDBPyConnection, landing_dir: Path, week: date) -> WeekRead:
    """Parse the landing files that can hold `week`'s records: new or changed files, files
    indexed with the week, and files sharing a trace_id (or a trace's spans) with it."""
    from feedback_pipeline.ingest.listing import landing_files
    from feedback_pipeline.ingest.parse import parse_landing

    current = fingerprints(landing_dir, landing_files(landing_dir)[0])
    plan = plan_reads(con, current, week)
    parsed = parse_landing(con, landing_dir, only=plan.parse)
    sharing = files_sharing_trace_ids(con, week, plan.parse)
    if sharing:  # rare: a trace_id re-sent in another week's file; read both copies
        parsed = parse_landing(con, landing_dir, only=plan.parse + sharing)
    return WeekRead(parsed=parsed, current=current, plan=plan, sharing=sharing)


@dataclass(frozen=True)
class ReadPlan:
    """The files to parse for one week, and why."""

    parse: list[str]       # relative names, sorted
    changed: list[str]     # new or changed since indexed (their index rows are rewritten)
    unchanged_skipped: int  # indexed files with nothing for this week


def fingerprints(landing_dir: Path, files: list[Path]) -> pl.DataFrame:
    rows = []
    for path in files:
        stat = path.stat()
        rows.append((str(path.relative_to(landing_dir)), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return pl.DataFrame(rows, schema=_FINGERPRINT_SCHEMA, orient="row")


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {MANIFEST} (
        source_file VARCHAR NOT NULL, size_bytes BIGINT, modified_ns BIGINT, inode BIGINT,
        weeks DATE[], hash_version VARCHAR, indexed_at TIMESTAMPTZ)""")
    con.execute(f"CREATE TABLE IF NOT EXISTS {TRACE_INDEX} (source_file VARCHAR, trace_hash UBIGINT, week DATE)")


def plan_reads(con: duckdb.DuckDBPyConnection, current: pl.DataFrame, week: date) -> ReadPlan:
    """New/changed files plus indexed files with records (or quarantine rows) in `week`."""
    if not table_exists(con, MANIFEST):
        names = sorted(current["source_file"].to_list())
        return ReadPlan(parse=names, changed=names, unchanged_skipped=0)
    con.register("_current_files", current)
    try:
        rows = con.execute(f"""
            SELECT c.source_file,
                   m.source_file IS NULL OR m.size_bytes <> c.size_bytes OR m.modified_ns <> c.modified_ns
                   OR m.inode <> c.inode OR m.hash_version <> ? AS changed,
                   coalesce(list_contains(m.weeks, ?::DATE), FALSE) AS has_week
            FROM _current_files c LEFT JOIN ({_ONE_ROW_PER_FILE}) m USING (source_file)
            ORDER BY c.source_file
        """, [HASH_VERSION, week]).fetchall()
    finally:
        con.unregister("_current_files")
    changed = [name for name, is_changed, _ in rows if is_changed]
    parse = [name for name, is_changed, has_week in rows if is_changed or has_week]
    return ReadPlan(parse=parse, changed=changed, unchanged_skipped=len(rows) - len(parse))


def files_sharing_trace_ids(con: duckdb.DuckDBPyConnection, week: date, parsed: list[str]) -> list[str]:
    """Indexed files not yet parsed that hold a trace_id of `week`'s parsed records.

    Reads the temp tables `typed_keys` and `span_keys` (trace_id, week, source_file)
    left by `parse_landing`.
    """
    if not table_exists(con, TRACE_INDEX):
        return []
    con.register("_parsed_files", pl.DataFrame({"source_file": parsed}, schema={"source_file": pl.String}))
    try:
        return [name for (name,) in con.execute(f"""
            SELECT DISTINCT i.source_file
            FROM {TRACE_INDEX} i
            SEMI JOIN (SELECT hash(trace_id) AS trace_hash FROM {_KEYS} WHERE week = ?) k USING (trace_hash)
            ANTI JOIN _parsed_files USING (source_file)
            ORDER BY 1
        """, [week]).fetchall()]
    finally:
        con.unregister("_parsed_files")


def record_files(con: duckdb.DuckDBPyConnection, current: pl.DataFrame, changed: list[str]) -> None:
    """Index the changed files from this parse (temp tables `typed_keys`, `span_keys`, `parsed_quarantine`)
    and forget files that left the landing folder."""
    ensure_tables(con)
    con.register("_current_files", current)
    con.register("_changed_files", pl.DataFrame({"source_file": changed}, schema={"source_file": pl.String}))
    try:
        gone_or_changed = f"""source_file IN (SELECT source_file FROM _changed_files)
            OR source_file NOT IN (SELECT source_file FROM _current_files)"""
        con.execute(f"DELETE FROM {MANIFEST} WHERE {gone_or_changed}")
        con.execute(f"DELETE FROM {TRACE_INDEX} WHERE {gone_or_changed}")
        if not changed:
            return
        con.execute(f"""
            INSERT INTO {TRACE_INDEX}
            SELECT source_file, hash(trace_id), week FROM {_KEYS} SEMI JOIN _changed_files USING (source_file)
        """)
        con.execute(f"""
            INSERT INTO {MANIFEST}
            WITH outcomes AS (
                SELECT source_file, week FROM {_KEYS} SEMI JOIN _changed_files USING (source_file)
                UNION ALL
                SELECT source_file, week FROM parsed_quarantine SEMI JOIN _changed_files USING (source_file)
            ), per_file AS (
                SELECT source_file, list_sort(list_distinct(list(week))) AS weeks
                FROM outcomes GROUP BY source_file
            )
            SELECT c.source_file, c.size_bytes, c.modified_ns, c.inode, coalesce(p.weeks, []::DATE[]), ?, now()
            FROM _current_files c SEMI JOIN _changed_files USING (source_file)
            LEFT JOIN per_file p USING (source_file)
        """, [HASH_VERSION])
    finally:
        con.unregister("_current_files")
        con.unregister("_changed_files")
