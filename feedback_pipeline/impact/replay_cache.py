"""`ReplayCache`: the agent's past answers in the warehouse table `replay_cache`.

Keyed by `cache_key` (sha256 of the exact messages, model name and call settings; built in
`replay_requests.py`), so a re-run of the weekly replay makes no new agent calls. Its connection also
holds the judge's `judge_cache`.
"""

from collections.abc import Sequence

import duckdb
import polars as pl

from feedback_pipeline.warehouse import create_table


class ReplayCache:
    """Agent answers in the warehouse table `replay_cache`, keyed by `cache_key`; its connection
    also holds the judge's `judge_cache`."""

    TABLE = "replay_cache"
    COLUMNS = ("cache_key", "case_id", "model", "answer", "prompt_tokens", "completion_tokens")

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        create_table(con, f"""
            CREATE TABLE IF NOT EXISTS {self.TABLE} (
                cache_key VARCHAR NOT NULL, case_id VARCHAR NOT NULL, model VARCHAR NOT NULL,
                answer VARCHAR NOT NULL, prompt_tokens BIGINT, completion_tokens BIGINT,
                created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT current_timestamp)""")

    def get_many(self, keys: Sequence[str] | pl.Series) -> pl.DataFrame:
        wanted = pl.DataFrame({"cache_key": pl.Series(list(keys), dtype=pl.String)}).unique()
        self.con.register("_replay_wanted", wanted)
        try:
            return self.con.sql(f"SELECT {', '.join(self.COLUMNS)} FROM {self.TABLE} "
                                "WHERE cache_key IN (SELECT cache_key FROM _replay_wanted) "
                                "QUALIFY row_number() OVER (PARTITION BY cache_key ORDER BY created_at) = 1").pl()
        finally:
            self.con.unregister("_replay_wanted")

    def put_many(self, frame: pl.DataFrame) -> None:
        new = frame.filter(pl.col("answer").is_not_null()).unique("cache_key").select(self.COLUMNS)
        if new.is_empty():
            return
        self.con.register("_replay_new", new)
        try:
            cols = ", ".join(self.COLUMNS)
            # Only new keys (no PRIMARY KEY on a DuckLake; a raced duplicate is read once).
            self.con.execute(f"INSERT INTO {self.TABLE} ({cols}) SELECT {cols} FROM _replay_new "
                             f"ANTI JOIN {self.TABLE} USING (cache_key)")
        finally:
            self.con.unregister("_replay_new")
