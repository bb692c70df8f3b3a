"""What analysts and fine-tuning teams read: snapshot files, the analyst database, DPO pairs.

Every file appears whole or not at all (written under a temporary name, then renamed),
so a reader never sees half a file. `exports/analyst.duckdb` holds only views over the
exported Parquet files and is replaced by rename, so `duckdb -readonly` opens it while
the warehouse (another file, one writer) is being written. No Dagster here.

Layout under the exports folder:
  eval_sets/<agent_id>/<week>/{cases.parquet, cases.jsonl, manifest.json}
  tables/<name>/<partition or all>.parquet
  analyst.duckdb
"""

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.evalset.snapshot import (
    SNAPSHOT_COLUMNS, canonical_lines, conform, lines_hash,
)
from feedback_pipeline.scoring.redact import redact_texts

ANALYST_DB = "analyst.duckdb"
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PARTITION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@=-]*")
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


class ExportConflictError(RuntimeError):
    """An export already exists with different content; published snapshots are never overwritten."""


# ------------------------------------------------------------------ eval-set files

def export_snapshot(rows: pl.DataFrame, manifest: dict, exports_dir: str | Path) -> Path:
    """Write `eval_sets/<agent_id>/<week>/` (Parquet, JSONL, manifest.json); return the folder.

    The folder is staged whole and renamed into place. If it exists with the same
    content hash nothing is written; with another hash, ExportConflictError.
    """
    lines = canonical_lines(rows)
    actual = lines_hash(lines)
    if actual != manifest["content_hash"]:
        raise ValueError(f"rows hash to {actual} but the manifest says {manifest['content_hash']}")
    exports_dir = Path(exports_dir)
    agent, week = _safe(manifest["agent_id"], _PARTITION), _safe(manifest["week"], _PARTITION)
    target = exports_dir / "eval_sets" / agent / week
    if target.exists():
        _check_same(target, actual)
        return target
    staging = exports_dir / ".staging" / f"{manifest['snapshot_id']}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        conform(rows, SNAPSHOT_COLUMNS).sort("case_id").write_parquet(staging / "cases.parquet")
        (staging / "cases.jsonl").write_text("".join(f"{line}\n" for line in lines), "utf-8")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)  # atomic; fails if another writer got there first
        except OSError:
            _check_same(target, actual)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_same(target: Path, expected_hash: str) -> None:
    try:
        existing = json.loads((target / "manifest.json").read_text("utf-8"))["content_hash"]
    except (OSError, ValueError, KeyError) as exc:
        raise ExportConflictError(f"{target} exists but its manifest.json is unreadable ({exc}); "
                                  "inspect it by hand, it is never overwritten") from exc
    if existing != expected_hash:
        raise ExportConflictError(
            f"{target} was published with content hash {existing}; this run produced {expected_hash}. "
            "A published snapshot is never overwritten: find out why the inputs changed "
            "(late labels? pass labels as of the week's end), or publish a new week.")


def publish_table(frame: pl.DataFrame, exports_dir: str | Path, name: str,
                  partition: str | None = None) -> Path:
    """Write `tables/<name>/<partition or 'all'>.parquet` atomically (replacing that file)."""
    folder = Path(exports_dir) / "tables" / _safe(name, _NAME)
    if name in _RESERVED_VIEWS:
        raise ValueError(f"'{name}' is the name of an eval-set view; choose another table name")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{_safe(partition or 'all', _PARTITION)}.parquet"
    tmp = folder / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------- analyst database

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
                con.execute(f'COMMENT ON VIEW "{name}" IS {_quote(sql)}')
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
            f"SELECT * FROM read_parquet({_quote(root / 'eval_sets/*/*/cases.parquet')}, union_by_name = true)")
    if any(root.glob("eval_sets/*/*/manifest.json")):
        views["eval_set_manifests"] = (
            "SELECT snapshot_id, agent_id, CAST(week AS DATE) AS week, content_hash, "
            "CAST(n_cases AS BIGINT) AS n_cases, CAST(created_at AS TIMESTAMPTZ) AS created_at, "
            "* EXCLUDE (snapshot_id, agent_id, week, content_hash, n_cases, created_at) "
            f"FROM read_json({_quote(root / 'eval_sets/*/*/manifest.json')}, "
            "format = 'auto', union_by_name = true)")
    tables = root / "tables"
    for folder in sorted(tables.iterdir()) if tables.is_dir() else []:
        usable = _NAME.fullmatch(folder.name) and folder.name not in _RESERVED_VIEWS
        if usable and any(folder.glob("*.parquet")):
            views[folder.name] = (f"SELECT * FROM read_parquet({_quote(folder / '*.parquet')}, "
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


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _safe(value: str, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"'{value}' cannot be used as a file or view name (allowed: {pattern.pattern})")
    return value


# ---------------------------------------------------------------- preference pairs

_MESSAGE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
DPO_COLUMNS: dict[str, pl.DataType] = {
    "prompt": _MESSAGE, "chosen": _MESSAGE, "rejected": _MESSAGE,
    "pair_source": pl.String, "chosen_evidence": pl.String, "case_id": pl.String,
    "trace_id": pl.String, "chosen_trace_id": pl.String, "conversation_id": pl.String,
    "agent_id": pl.String, "snapshot_id": pl.String, "rubric_version": pl.String,
    "failure_category": pl.String,
}


def dpo_pairs(snapshot_rows: pl.DataFrame, traces: pl.DataFrame, *, redact: bool = True,
              implicit_pass: str = "thumbs_up") -> pl.DataFrame:
    """Preference pairs (TRL conversational format) from the dev split only (DPO_COLUMNS).

    A failing dev case whose user rewrote the request (`user_rewrote`) or that was
    escalated gives a pair when the conversation's next agent turn passed: `rejected` is
    the failing answer, `chosen` the next answer, `prompt` the context and user turn.
    The next turn passed when it is a case labeled pass (`chosen_evidence` =
    "human_label"), or, without a label, by `implicit_pass`: "thumbs_up" (thumbs up, not
    escalated, not rewritten), "no_complaint" (no thumbs down, not escalated, not
    rewritten) or "none" (labels only).
    """
    if implicit_pass not in ("thumbs_up", "no_complaint", "none"):
        raise ValueError(f"implicit_pass must be thumbs_up, no_complaint or none, not {implicit_pass!r}")
    rows = conform(snapshot_rows, SNAPSHOT_COLUMNS)
    flags = traces.select("trace_id", pl.col("user_rewrote").fill_null(False),
                          pl.col("escalated").fill_null(False))
    failing = (rows.filter((pl.col("split") == "dev") & (pl.col("verdict") == "fail"))
               .join(flags, on="trace_id", how="inner")
               .filter(pl.col("user_rewrote") | pl.col("escalated") | (pl.col("source") == "escalation")))
    nxt = traces.select(
        "conversation_id", (pl.col("turn_index") - 1).alias("turn_index"),
        pl.col("trace_id").alias("chosen_trace_id"), pl.col("agent_response").alias("_chosen_text"),
        pl.col("thumbs").alias("_thumbs"), pl.col("escalated").fill_null(False).alias("_esc"),
        pl.col("user_rewrote").fill_null(False).alias("_rewrote"))
    labeled = rows.select(pl.col("trace_id").alias("chosen_trace_id"),
                          pl.col("verdict").alias("_next_verdict"))
    quiet = ~pl.col("_esc") & ~pl.col("_rewrote")
    implicit = {"thumbs_up": quiet & (pl.col("_thumbs") == "up"),
                "no_complaint": quiet & (pl.col("_thumbs").fill_null("") != "down"),
                "none": pl.lit(False)}[implicit_pass]
    evidence = (pl.when(pl.col("_next_verdict") == "pass").then(pl.lit("human_label"))
                .when(pl.col("_next_verdict").is_null() & implicit).then(pl.lit(f"implicit_{implicit_pass}")))
    pairs = (failing.join(nxt, on=["conversation_id", "turn_index"], how="inner")
             .join(labeled, on="chosen_trace_id", how="left")
             .with_columns(evidence.alias("chosen_evidence"))
             .filter(pl.col("chosen_evidence").is_not_null()))
    if redact and pairs.height:
        pairs = pairs.with_columns(redact_texts(pairs["_chosen_text"]))
    turn = pl.element().struct.field
    context = pl.col("context").list.eval(pl.concat_list(
        pl.struct(pl.lit("user").alias("role"), turn("user_message").alias("content")),
        pl.struct(pl.lit("assistant").alias("role"), turn("agent_response").alias("content")),
    ).explode())
    out = pairs.with_columns(
        pl.concat_list(context, _message("user", pl.col("user_message"))).alias("prompt"),
        _message("assistant", pl.col("_chosen_text")).alias("chosen"),
        _message("assistant", pl.col("agent_response")).alias("rejected"),
        pl.when(pl.col("user_rewrote")).then(pl.lit("user_rewrite"))
        .otherwise(pl.lit("escalation_resolved")).alias("pair_source"),
    )
    return conform(out, DPO_COLUMNS).sort("case_id")


def check_no_heldout_leak(pairs: pl.DataFrame, snapshot_rows: pl.DataFrame) -> list[str]:
    """One message per pair whose conversation holds a held-out (test) case: [] means no leak."""
    test = snapshot_rows.filter(pl.col("split") == "test").select("conversation_id").unique()
    leaks = pairs.join(test, on="conversation_id", how="semi").sort("conversation_id", "case_id")
    return [f"DPO pair for case {r['case_id']} uses conversation {r['conversation_id']}, "
            "which holds a held-out (test) case" for r in leaks.iter_rows(named=True)]


def _message(role: str, content: pl.Expr) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), content.alias("content")))
