"""`JudgeCache`: the warehouse table `judge_cache` of past successful verdicts, keyed by `cache_key`.

Its shape is the `JudgeCacheTable` Pandera model (`scoring/schemas.py`): the DDL, the
columns read and written and the empty answer derive from it. How a cache key is made
is `prompts.py`'s; when the cache is read and written is `traces.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import duckdb
import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.warehouse import create_table
from feedback_pipeline.scoring.schemas import JudgeCacheTable

# Columns the warehouse fills on insert: neither written nor read back by the cache.
_SQL_DEFAULTS = {"created_at": "current_timestamp"}


def _duckdb_type(dtype: pl.DataType) -> str:
    if dtype == pl.Datetime:
        return "TIMESTAMP WITH TIME ZONE" if dtype.time_zone else "TIMESTAMP"
    return {pl.String: "VARCHAR", pl.Int64: "BIGINT"}[dtype.base_type()]


def _create_table_sql(table: str) -> str:
    """CREATE TABLE IF NOT EXISTS for the model: not nullable is NOT NULL. The unique key is
    kept by the writes (`put_many` inserts only new keys) and the reads (one row per key),
    not by a PRIMARY KEY: a DuckLake has none, and two writers may race on a key."""
    columns = JudgeCacheTable.to_schema().columns
    lines = []
    for name, dtype in polars_schema(JudgeCacheTable).items():
        column = columns[name]
        constraint = "" if column.nullable and not column.unique else " NOT NULL"
        default = f" DEFAULT {_SQL_DEFAULTS[name]}" if name in _SQL_DEFAULTS else ""
        lines.append(f"{name} {_duckdb_type(dtype)}{constraint}{default}")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(lines)})"


class JudgeCache:
    """Successful verdicts in the warehouse table `judge_cache`, keyed by `cache_key`.

    Either on an open connection `con`, or with `connect` (e.g. `FeedbackHome.warehouse`),
    which opens one for each read or write and closes it right after: the warehouse is then
    free for other writers while the judge calls run.
    """

    TABLE = "judge_cache"
    COLUMNS = tuple(c for c in polars_schema(JudgeCacheTable) if c not in _SQL_DEFAULTS)
    DDL = _create_table_sql(TABLE)

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None, *,
                 connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]] | None = None) -> None:
        if (con is None) == (connect is None):
            raise ValueError("JudgeCache needs exactly one of con and connect")
        self.con = con
        self._connect = connect
        with self._connection() as con:
            create_table(con, self.DDL)

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.con is not None:
            yield self.con
        else:
            with self._connect() as con:
                yield con

    def get_many(self, keys: Sequence[str] | pl.Series) -> pl.DataFrame:
        """Cached rows (COLUMNS) for those of `keys` that are present."""
        wanted = pl.DataFrame({"cache_key": pl.Series(list(keys), dtype=pl.String)}).unique()
        if wanted.is_empty():
            return self.empty()
        with self._connection() as con:
            con.register("_judge_cache_wanted", wanted)
            try:
                return con.sql(
                    f"SELECT {', '.join(self.COLUMNS)} FROM {self.TABLE}"
                    " WHERE cache_key IN (SELECT cache_key FROM _judge_cache_wanted)"
                    " QUALIFY row_number() OVER (PARTITION BY cache_key ORDER BY created_at) = 1"
                ).pl()
            finally:
                con.unregister("_judge_cache_wanted")

    def put_many(self, frame: pl.DataFrame) -> int:
        """Insert the rows of `frame` (COLUMNS) that hold a verdict; keys already cached are kept."""
        new = frame.filter(pl.col("verdict").is_not_null()).unique("cache_key").select(self.COLUMNS)
        if new.is_empty():
            return 0
        cols = ", ".join(self.COLUMNS)
        with self._connection() as con:
            con.register("_judge_cache_new", new)
            try:
                before = con.sql(f"SELECT count(*) FROM {self.TABLE}").fetchone()[0]
                con.execute(
                    f"INSERT INTO {self.TABLE} ({cols}) SELECT {cols} FROM _judge_cache_new"
                    f" ANTI JOIN {self.TABLE} USING (cache_key)")
                return con.sql(f"SELECT count(*) FROM {self.TABLE}").fetchone()[0] - before
            finally:
                con.unregister("_judge_cache_new")

    @classmethod
    def empty(cls) -> pl.DataFrame:
        """A frame shaped like `get_many`'s answer, with no rows."""
        schema = polars_schema(JudgeCacheTable)
        return pl.DataFrame(schema={c: schema[c] for c in cls.COLUMNS})
