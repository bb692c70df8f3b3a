"""What analysts read while runs write: published Parquet tables and the analyst database.

Every file appears whole or not at all (written under a temporary name, then renamed),
so a reader never sees half a file. `exports/analyst.duckdb` holds only views over the
exported Parquet files and is replaced by rename, so `duckdb -readonly` opens it while
the warehouse (another file, one writer) is being written. Eval-set snapshot files are
written by the evalset stage; this module only exposes them as views. No Dagster here.

Layout under the exports folder:
  eval_sets/<agent_id>/<week>/{cases.parquet, cases.jsonl, manifest.json}  (evalset stage)
  tables/<name>/<partition or all>.parquet
  analyst.duckdb
"""

import os
import re
import uuid
from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.files import atomic_write


ANALYST_DB = "analyst.duckdb"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
PARTITION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@=-]*")
_RESERVED_VIEWS = ("eval_set_snapshots", "eval_set_manifests")


# Documented for analysts (README): `duckdb -readonly exports/analyst.duckdb`, then these
# with $agent_id / $week / $old / $new filled in. Tested against a real export.
EXAMPLE_QUERIES: dict[str, str] = {
    "pass_rate_by_week": """
        SELECT week, count(*) AS n_cases, avg(CAST(verdict = 'pass' AS INTEGER)) AS pass_rate
        FROM eval_set_snapshots
        WHERE agent_id = $agent_id AND split = 'test'
        GROUP BY week ORDER BY week""",
    "added_this_week_by_category": """
        SELECT coalesce(failure_category, verdict) AS category, count(*) AS n_added
        FROM eval_set_snapshots
        WHERE agent_id = $agent_id AND week = CAST($week AS DATE) AND first_seen_week = week
        GROUP BY ALL ORDER BY n_added DESC, category""",
    "snapshot_diff": """
        WITH old AS (SELECT * FROM eval_set_snapshots WHERE snapshot_id = $old),
             new AS (SELECT * FROM eval_set_snapshots WHERE snapshot_id = $new)
        SELECT coalesce(new.case_id, old.case_id) AS case_id,
               CASE WHEN old.case_id IS NULL THEN 'added'
                    WHEN new.case_id IS NULL THEN 'removed' ELSE 'relabeled' END AS change,
               old.verdict AS old_verdict, new.verdict AS new_verdict,
               old.failure_category AS old_category, new.failure_category AS new_category
        FROM old FULL JOIN new ON old.case_id = new.case_id
        WHERE old.case_id IS NULL OR new.case_id IS NULL
           OR old.verdict IS DISTINCT FROM new.verdict
           OR old.failure_category IS DISTINCT FROM new.failure_category
           OR old.rubric_version IS DISTINCT FROM new.rubric_version
        ORDER BY change, case_id""",
}


def publish_table(frame: pl.DataFrame, exports_dir: str | Path, name: str,
                  partition: str | None = None) -> Path:
    """Write `tables/<name>/<partition or 'all'>.parquet` atomically (replacing that file)."""
    folder = Path(exports_dir) / "tables" / safe_name(name, NAME_PATTERN)
    if name in _RESERVED_VIEWS:
        raise ValueError(f"'{name}' is the name of an eval-set view; choose another table name")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{safe_name(partition or 'all', PARTITION_PATTERN)}.parquet"
    return atomic_write(target, frame.write_parquet)


def write_analyst_db(exports_dir: str | Path) -> Path:
    """(Re)write `analyst.duckdb`: one view per published dataset that has files.

    Views read the files at query time (absolute paths), so a new week's files show up
    without rewriting the database; a new table folder needs this call again. When the
    file already holds exactly these views it is left as it is (each view's SQL is kept
    as its comment, to compare).
    """
    root = Path(exports_dir).resolve()
    views = _analyst_views(root)
    target = root / ANALYST_DB
    if _views_in(target) == views:
        return target
    tmp = root / f".{ANALYST_DB}.{uuid.uuid4().hex}.tmp"
    try:
        con = duckdb.connect(str(tmp))
        try:
            for name, sql in views.items():
                con.execute(f'CREATE VIEW "{name}" AS {sql}')
                con.execute(f'COMMENT ON VIEW "{name}" IS {sql_quote(sql)}')
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return target


def _analyst_views(root: Path) -> dict[str, str]:
    """{view name: SQL} for every published dataset under `root` that has files."""
    views: dict[str, str] = {}
    if any(root.glob("eval_sets/*/*/cases.parquet")):
        views["eval_set_snapshots"] = (
            f"SELECT * FROM read_parquet({sql_quote(root / 'eval_sets/*/*/cases.parquet')}, union_by_name = true)")
    if any(root.glob("eval_sets/*/*/manifest.json")):
        views["eval_set_manifests"] = (
            "SELECT snapshot_id, agent_id, CAST(week AS DATE) AS week, content_hash, "
            "CAST(n_cases AS BIGINT) AS n_cases, CAST(created_at AS TIMESTAMPTZ) AS created_at, "
            "* EXCLUDE (snapshot_id, agent_id, week, content_hash, n_cases, created_at) "
            f"FROM read_json({sql_quote(root / 'eval_sets/*/*/manifest.json')}, "
            "format = 'auto', union_by_name = true)")
    tables = root / "tables"
    for folder in sorted(tables.iterdir()) if tables.is_dir() else []:
        usable = NAME_PATTERN.fullmatch(folder.name) and folder.name not in _RESERVED_VIEWS
        if usable and any(folder.glob("*.parquet")):
            views[folder.name] = (f"SELECT * FROM read_parquet({sql_quote(folder / '*.parquet')}, "
                                  "union_by_name = true)")
    return views


def _views_in(path: Path) -> dict[str, str] | None:
    """{view name: comment} of an existing analyst database; None if there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        return dict(con.execute("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
    except duckdb.Error:
        return None
    finally:
        con.close()


def sql_quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def safe_name(value: str, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"'{value}' cannot be used as a file or view name (allowed: {pattern.pattern})")
    return value
