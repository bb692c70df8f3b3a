"""What a week's run read and where each record went: the figures its materialization reports.

Per file, `read = loaded + duplicates_dropped + quarantined` for the week (a converted
turn is one record); for tracing exports also the source rows (spans, observations,
runs, scores) and where they went, with `rows_read = in_turns + duplicates + held +
quarantined` (a span folded into its turn counts in `in_turns`; a held span waits in
its file for its trace's root and is counted again, as whatever it becomes, by the run
that assembles it). Queries over the parse's temp tables only; no writing.
"""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl


def week_accounting(con: duckdb.DuckDBPyConnection, week: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per file: loaded, duplicates_dropped, quarantined, read; per field: n, example reason)."""
    per_file = con.execute("""
        SELECT source_file,
               count(*) FILTER (WHERE what = 'loaded') AS loaded,
               count(*) FILTER (WHERE what = 'duplicate') AS duplicates_dropped,
               count(*) FILTER (WHERE what = 'quarantined') AS quarantined,
               count(*) AS read
        FROM (SELECT source_file, 'loaded' AS what FROM parsed_keys WHERE week = $1
              UNION ALL SELECT source_file, 'duplicate' FROM parsed_duplicates WHERE week = $1
              UNION ALL SELECT source_file, 'quarantined' FROM parsed_quarantine WHERE week = $1)
        GROUP BY source_file ORDER BY source_file
    """, [week]).pl()
    reasons = con.execute("""
        SELECT field, count(*) AS n, any_value(reason) AS example
        FROM parsed_quarantine WHERE week = ? GROUP BY field ORDER BY n DESC
    """, [week]).pl()
    return per_file, reasons


def totals(per_file: pl.DataFrame) -> dict[str, int]:
    return {k: int(per_file[k].sum()) if per_file.height else 0
            for k in ("read", "loaded", "duplicates_dropped", "quarantined")}
