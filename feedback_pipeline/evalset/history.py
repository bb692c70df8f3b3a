"""Whether any published eval-set snapshot ever changed, checked from the warehouse's own
history: on a DuckLake every commit is a snapshot that can be read back
(`... AT (VERSION => v)`), so anyone who can attach the lake read-only can verify, without
trusting the pipeline, that each snapshot's content hash was the same at every version
since it was first written.

Read-only; the DuckDB file keeps no history (there the blocking check `snapshot_unchanged`
guards each write instead). Not here: how snapshots are built or hashed (`week.py`, `manifest.py`).
"""

from __future__ import annotations

import duckdb
import polars as pl

from feedback_pipeline.warehouse import is_lake

_HISTORY_SCHEMA = {"version": pl.Int64, "snapshot_id": pl.String, "content_hash": pl.String}


def manifest_history(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every (lake version, snapshot_id, content_hash) of `eval_set_manifests` since it existed."""
    if not is_lake(con):
        raise ValueError("the warehouse keeps no history: set FEEDBACK_PIPELINE_WAREHOUSE to a DuckLake")
    versions = [v for (v,) in con.execute(
        "SELECT snapshot_id FROM ducklake_snapshots(current_database()) ORDER BY 1").fetchall()]
    frames = []
    for version in versions:
        try:
            frames.append(con.execute(
                f"SELECT {int(version)}::BIGINT AS version, snapshot_id, content_hash "
                f"FROM eval_set_manifests AT (VERSION => {int(version)})").pl())
        except duckdb.CatalogException:  # versions from before the table was made
            continue
    return pl.concat(frames) if frames else pl.DataFrame(schema=_HISTORY_SCHEMA)


def changed_snapshots(history: pl.DataFrame) -> pl.DataFrame:
    """The snapshots whose content hash was not the same at every version: (snapshot_id,
    hashes seen, first and last version). Empty when every snapshot stayed as published."""
    return (history.group_by("snapshot_id")
            .agg(pl.col("content_hash").unique().sort().alias("hashes"),
                 pl.col("version").min().alias("first_version"), pl.col("version").max().alias("last_version"))
            .filter(pl.col("hashes").list.len() > 1)
            .sort("snapshot_id"))
