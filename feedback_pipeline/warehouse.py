"""Writing weekly tables: a week is replaced as a whole, in one transaction.

DuckDB commits atomically (write-ahead log), so a run killed mid-write leaves the
week as it was before; a re-run replaces it; other weeks are never touched. On a
DuckLake several writers commit at once; one whose commit conflicts with another's
(DuckLake refuses an insert into a table another transaction deleted from meanwhile)
is rolled back whole and written again (`write_attempts`), never half-applied.
The SQL is the same on both (`warehouse_location.py` makes the lake the default catalog).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import date
from typing import Iterator

import duckdb
import polars as pl
import tenacity

# A write that lost a race on a DuckLake is tried again this many times, waiting a random,
# growing 0.05-5 s between tries (writers that collided do not collide again in step).
WRITE_ATTEMPTS = 30
log = logging.getLogger(__name__)


def is_write_conflict(exc: BaseException) -> bool:
    """DuckLake's refusal of a commit that conflicts with one made meanwhile."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def write_attempts() -> tenacity.Retrying:
    """Attempts of one write transaction: `for attempt in write_attempts(): with attempt,
    transaction(con): ...` re-runs the block after a write conflict (DuckLake) and only then."""
    return tenacity.Retrying(retry=tenacity.retry_if_exception(is_write_conflict),
                             wait=tenacity.wait_random_exponential(multiplier=0.05, max=5),
                             stop=tenacity.stop_after_attempt(WRITE_ATTEMPTS), reraise=True,
                             before_sleep=tenacity.before_sleep_log(log, logging.INFO))


def create_table(con: duckdb.DuckDBPyConnection, ddl: str) -> None:
    """`CREATE TABLE IF NOT EXISTS ...` that two writers may race on (a DuckLake refuses the
    second create of a name; tried again, it finds the table)."""
    for attempt in write_attempts():
        with attempt:
            con.execute(ddl)


def is_lake(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the warehouse is a DuckLake (for the few DuckDB-file options a lake lacks)."""
    return con.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()"
                       ).fetchone()[0] == "ducklake"


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """A table of the warehouse itself (not a temp table or another attached database)."""
    return table in warehouse_tables(con)


def warehouse_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database()").fetchall()}


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main' "
        "AND table_catalog = current_database()", [table]).fetchall()}


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
        for attempt in write_attempts():
            with attempt, transaction(con):
                rows = replace_week(con, table, week, select_sql, params, atomic=False)
        return rows
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
        for attempt in write_attempts():
            with attempt, transaction(con):
                rows = replace_table(con, table, frame, atomic=False)
        return rows
    con.register("_frame_to_write", frame)
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _frame_to_write LIMIT 0")
        con.execute(f"DELETE FROM {table}")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame_to_write")
    finally:
        con.unregister("_frame_to_write")
    return frame.height
