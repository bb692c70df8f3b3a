"""The line-level path's input: every record of a file as one JSON text in the temp table `lines`.

`lines` (source_file, source_line, kind, line) holds JSONL lines (blank ones too, so
numbers stay exact; they are skipped later), Parquet rows as JSON, and the rows of the
typed fast paths that break a value rule (contract files, converted tracing exports),
as JSON texts. Typing and checking those texts is `typed.py`'s and `rules.py`'s job.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.ingest.landing import lenient_lines

# \x1f never appears raw in valid JSON (control characters must be escaped), so it
# serves as "no separator" when the CSV reader is used to read whole lines.
NO_SEPARATOR = "\x1f"
# A record is any line that is not blank. Unicode trim over every line costs 20x a
# byte-length test, so only short lines are trimmed.
NOT_BLANK = "CASE WHEN strlen(coalesce(line, '')) < 64 THEN trim(coalesce(line, '')) <> '' ELSE TRUE END"
# Strip a Windows line end without touching every line.
NO_CR = "CASE WHEN ends_with(line, chr(13)) THEN left(line, -1) ELSE line END"


def create_lines(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE lines "
                "(source_file VARCHAR, source_line BIGINT, kind VARCHAR, line VARCHAR)")


def load_lines(con: duckdb.DuckDBPyConnection, path: Path, name: str) -> None:
    """Append one contract file's lines (JSONL) or rows (Parquet, as JSON) to `lines`.

    A file with bytes that are not UTF-8 is re-read leniently so each bad line can be
    quarantined with its text instead of failing the whole file.
    """
    if name.endswith(".parquet"):
        con.execute(
            "INSERT INTO lines SELECT ?, row_number() OVER (), 'row', to_json(t)::VARCHAR "
            "FROM read_parquet(?) t",
            [name, str(path)],
        )
        return
    try:
        con.execute(
            f"INSERT INTO lines SELECT ?, row_number() OVER (), 'line', {NO_CR} "
            f"FROM read_csv(?, columns={{'line': 'VARCHAR'}}, delim='{NO_SEPARATOR}', quote='', "
            "escape='', header=false, auto_detect=false, compression='auto')",
            [name, str(path)],
        )
    except duckdb.Error:
        lines = lenient_lines(path).with_columns(pl.lit(name).alias("source_file"))
        con.register("lenient_lines", lines)
        con.execute(f"INSERT INTO lines SELECT source_file, source_line, 'line', {NO_CR} FROM lenient_lines")
        con.unregister("lenient_lines")

