"""Every record of an export file as one JSON value in the temp table `src_rows`, with its position.

JSON Lines (line numbers exact, blank lines skipped), a JSON document or array
(element numbers), CSV and Parquet (row numbers) all become
`src_rows(kind, source_file, source_line, pos_kind, doc JSON)`. A line that is not
JSON goes to `src_bad` with its text. What a record means is the format modules' job.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from feedback_pipeline.ingest.lines import NO_CR, NO_SEPARATOR, NOT_BLANK
from feedback_pipeline.ingest.sources.detect import container


def create_row_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE src_rows (kind VARCHAR, source_file VARCHAR, source_line BIGINT, "
                "pos_kind VARCHAR, doc JSON)")
    con.execute("CREATE OR REPLACE TEMP TABLE src_bad (source_file VARCHAR, source_line BIGINT, pos_kind VARCHAR, "
                "reason VARCHAR, raw_text VARCHAR)")


def load_rows(con: duckdb.DuckDBPyConnection, path: Path, name: str, kind: str) -> None:
    """Append the file's records to `src_rows` (raises a DuckDB error when the file is unreadable)."""
    layout = container(name)
    if layout == "jsonl":
        _load_jsonl(con, path, name, kind)
        return
    if layout == "parquet":
        source, pos_kind = "(SELECT to_json(t) AS doc FROM read_parquet($2) t)", "row"
    elif layout == "csv":
        source, pos_kind = ("(SELECT to_json(t) AS doc FROM read_csv($2, header=true, all_varchar=true, "
                            "compression='auto') t)"), "row"
    else:
        source, pos_kind = "(SELECT json AS doc FROM read_json_objects($2, format='auto'))", None
    con.execute(f"""
        INSERT INTO src_rows
        WITH docs AS (SELECT doc, row_number() OVER () AS n FROM {source})
        SELECT $1, $3, n, coalesce($4, CASE WHEN count(*) OVER () = 1 THEN 'document' ELSE 'element' END), doc
        FROM docs
    """, [kind, str(path), name, pos_kind])


def _load_jsonl(con: duckdb.DuckDBPyConnection, path: Path, name: str, kind: str) -> None:
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _src_lines AS
        SELECT row_number() OVER () AS n, {NO_CR} AS line
        FROM read_csv($1, columns={{'line': 'VARCHAR'}}, delim='{NO_SEPARATOR}', quote='', escape='',
                      header=false, auto_detect=false, compression='auto', max_line_size=1000000000)
    """, [str(path)])
    con.execute(f"""
        INSERT INTO src_rows SELECT $1, $2, n, 'line', TRY_CAST(line AS JSON)
        FROM _src_lines WHERE {NOT_BLANK} AND json_valid(line)
    """, [kind, name])
    con.execute(f"""
        INSERT INTO src_bad SELECT $1, n, 'line', 'is not valid JSON (truncated or corrupt record); '
            || 'the exporter must write one JSON object per line', left(line, 2000)
        FROM _src_lines WHERE {NOT_BLANK} AND NOT json_valid(line)
    """, [name])
    con.execute("DROP TABLE _src_lines")
