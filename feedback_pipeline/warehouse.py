"""Writing weekly tables: a week is replaced as a whole, in one transaction.

DuckDB commits atomically (write-ahead log), so a run killed mid-write leaves the
week as it was before; a re-run replaces it; other weeks are never touched.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from typing import Iterator

import duckdb
import polars as pl


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
        [table],
    ).fetchone()[0])


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Everything inside commits together or not at all."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def replace_week(con: duckdb.DuckDBPyConnection, table: str, week: date, select_sql: str,
                 params: list | None = None, *, atomic: bool = True) -> int:
    """Replace `table`'s rows of `week` by the rows of `select_sql`; return the row count.

    The table is created from the query's shape the first time. Columns are matched
    by name. `atomic=False` when the caller already holds a `transaction` spanning
    several tables.
    """
    if atomic:
        with transaction(con):
            return replace_week(con, table, week, select_sql, params, atomic=False)
    if not table_exists(con, table):
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM ({select_sql}) LIMIT 0", params or [])
    con.execute(f"DELETE FROM {table} WHERE week = ?", [week])
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM ({select_sql})", params or [])
    return con.execute(f"SELECT count(*) FROM {table} WHERE week = ?", [week]).fetchone()[0]


def replace_week_frame(con: duckdb.DuckDBPyConnection, table: str, week: date, frame: pl.DataFrame,
                       *, atomic: bool = True) -> int:
    """`replace_week` for a Polars frame (all its rows must belong to `week`)."""
    con.register("_frame_to_write", frame)
    try:
        return replace_week(con, table, week, "SELECT * FROM _frame_to_write", atomic=atomic)
    finally:
        con.unregister("_frame_to_write")


def read_week(con: duckdb.DuckDBPyConnection, table: str, week: date, columns: str = "*") -> pl.DataFrame:
    """A week of a table as Polars (empty frame if the table does not exist yet)."""
    if not table_exists(con, table):
        return pl.DataFrame()
    return con.execute(f"SELECT {columns} FROM {table} WHERE week = ?", [week]).pl()


def replace_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame,
                  *, atomic: bool = True) -> int:
    """Whole-table replace for the tables that span weeks (labels, impact)."""
    if atomic:
        with transaction(con):
            return replace_table(con, table, frame, atomic=False)
    con.register("_frame_to_write", frame)
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _frame_to_write LIMIT 0")
        con.execute(f"DELETE FROM {table}")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame_to_write")
    finally:
        con.unregister("_frame_to_write")
    return frame.height
