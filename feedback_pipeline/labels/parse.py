"""Label files and escalations → `human_labels` rows, with a quarantine for everything refused.

Pure functions over Polars frames: reading one label file (CSV, JSONL, Label Studio
JSON export), validating candidate rows against the traces and the rubric, merging
accepted rows into the label history (idempotent re-import, supersede on re-label),
and turning escalation reasons into labels. No Dagster here; agreement statistics
and gold-label resolution live in `agreement.py`.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from feedback_pipeline.ingest.contract import ESCALATION_REASONS
from feedback_pipeline.label_studio import (
    CATEGORY_CONTROL, NOTES_CONTROL, VERDICT_CONTROL, VERDICTS,
)

LABEL_FIELDS: tuple[str, ...] = (
    "trace_id", "annotator_id", "verdict", "failure_category", "rubric_version",
    "labeled_at", "notes", "source",
)
REQUIRED_FILE_COLUMNS: tuple[str, ...] = LABEL_FIELDS[:6]
# Sources a label file may declare (optional `source` column; Label Studio:
# `data.label_source`). Escalation labels come from traces, never from files.
FILE_SOURCES: tuple[str, ...] = ("annotation", "adjudication")
ESCALATION_ANNOTATOR = "escalation"

# What read_label_file returns: every field as the text found in the file.
CANDIDATE_COLUMNS: dict[str, pl.DataType] = {
    "source_file": pl.String, "source_row": pl.Int64, "file_sha256": pl.String,
    **{f: pl.String for f in LABEL_FIELDS}, "raw_record": pl.String,
}
QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "source_file": pl.String, "source_row": pl.Int64, "file_sha256": pl.String,
    "trace_id": pl.String, "annotator_id": pl.String, "field": pl.String,
    "reason": pl.String, "raw_record": pl.String,
}
LABEL_COLUMNS: dict[str, pl.DataType] = {
    "label_id": pl.String, "trace_id": pl.String, "annotator_id": pl.String,
    "verdict": pl.String, "failure_category": pl.String, "rubric_version": pl.String,
    "labeled_at": pl.Datetime("us", "UTC"), "notes": pl.String, "source": pl.String,
    "source_file": pl.String, "source_row": pl.Int64, "file_sha256": pl.String,
}
HUMAN_LABEL_COLUMNS: dict[str, pl.DataType] = {
    **LABEL_COLUMNS, "imported_at": pl.Datetime("us", "UTC"),
    "is_current": pl.Boolean, "superseded_by": pl.String,
}
_SUPERSEDE_KEY = ("source", "trace_id", "annotator_id", "rubric_version")


# ---------------------------------------------------------------- reading files

def read_label_file(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(candidate label rows as text, problems found while reading) for one inbox file.

    `source_row` is the 1-based data row for CSV (header not counted), the physical
    line for JSONL, and the annotation's ordinal in file order for Label Studio.
    Each problem row counts as one record read.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        return _candidates([]), _problem(path.name, None, None, f"could not read the file: {exc}")
    sha = hashlib.sha256(content).hexdigest()
    reader = {".csv": _read_csv, ".jsonl": _read_jsonl, ".ndjson": _read_jsonl,
              ".json": _read_label_studio}.get(path.suffix.lower())
    if reader is None:
        return _candidates([]), _problem(path.name, None, sha, (
            f"unknown extension '{path.suffix}': label files must be .csv, .jsonl "
            "or .json (a Label Studio JSON export); rename or remove the file"))
    if not content.strip():
        return _candidates([]), _problem(path.name, None, sha, "the file is empty")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _candidates([]), _problem(path.name, None, sha, f"the file is not UTF-8 text: {exc}")
    candidates, problems = reader(text, path.name)
    tag = [pl.lit(path.name).alias("source_file"), pl.lit(sha).alias("file_sha256")]
    return (candidates.with_columns(tag).select(CANDIDATE_COLUMNS.keys()),
            problems.with_columns(tag).select(QUARANTINE_COLUMNS.keys()))


def _read_csv(text: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    try:
        df = pl.read_csv(text.encode(), infer_schema=False)
    except Exception as exc:  # polars raises several types for malformed CSV
        return _candidates([]), _problem(name, None, None, f"could not parse the CSV: {exc}")
    df = df.rename({c: c.strip().lower() for c in df.columns})
    missing = [c for c in REQUIRED_FILE_COLUMNS if c not in df.columns]
    if missing:
        return _candidates([]), _problem(name, None, None, (
            f"the header lacks column(s) {', '.join(missing)}; expected "
            f"{', '.join(REQUIRED_FILE_COLUMNS)} (notes, source optional)"))
    df = df.with_row_index("source_row", offset=1).with_columns(
        pl.col("source_row").cast(pl.Int64),
        pl.struct(pl.all().exclude("source_row")).struct.json_encode().alias("raw_record"),
        *[pl.lit(None, pl.String).alias(f) for f in LABEL_FIELDS if f not in df.columns],
    )
    return _conform(df, CANDIDATE_COLUMNS), _problems([])


def _read_jsonl(text: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    # One split into lines, then DuckDB's JSON functions per column: a bad line is
    # flagged by json_valid instead of failing the whole file as read_ndjson would.
    lines = pl.DataFrame({"line": text.split("\n")}).with_row_index("source_row", offset=1)
    lines = lines.filter(pl.col("line").str.strip_chars() != "")
    # DuckDB evaluates CASE branches eagerly, so invalid lines are swapped for a
    # harmless literal before any JSON function sees them.
    extract = ", ".join(f"{f} := json_extract_string(obj, '$.{f}')" for f in LABEL_FIELDS)
    con = duckdb.connect()
    con.register("lines", lines)
    parsed = con.sql(f"""
        WITH valid AS (
            SELECT source_row, line, json_valid(line) AS is_json,
                   CASE WHEN json_valid(line) THEN line ELSE 'null' END AS j
            FROM lines),
        typed AS (
            SELECT *, json_type(j) AS json_kind,
                   CASE WHEN json_type(j) = 'OBJECT' THEN j ELSE '{{}}' END AS obj
            FROM valid)
        SELECT source_row::BIGINT AS source_row, line AS raw_record,
               is_json AND json_kind = 'OBJECT' AS ok,
               CASE WHEN is_json THEN json_kind END AS json_kind,
               struct_pack({extract}) AS f
        FROM typed ORDER BY source_row""").pl()
    good = parsed.filter("ok").unnest("f")
    bad = parsed.filter(~pl.col("ok")).select(
        pl.lit(name).alias("source_file"), "source_row", pl.lit(None, pl.String).alias("file_sha256"),
        pl.lit(None, pl.String).alias("trace_id"), pl.lit(None, pl.String).alias("annotator_id"),
        pl.lit(None, pl.String).alias("field"),
        pl.when(pl.col("json_kind").is_null())
        .then(pl.format("{} line {}: not valid JSON; each line must be one JSON object", pl.lit(name), "source_row"))
        .otherwise(pl.format("{} line {}: a JSON {} where an object was expected", pl.lit(name), "source_row",
                             pl.col("json_kind").str.to_lowercase()))
        .alias("reason"),
        "raw_record",
    )
    return _conform(good, CANDIDATE_COLUMNS), _conform(bad, QUARANTINE_COLUMNS)


def _read_label_studio(text: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    # A Label Studio export is one JSON list whose annotations hold heterogeneous
    # shapes (completed_by is an int or a user object; result values vary by control
    # type), which no single Arrow schema fits: flattening it in Python is the clear way.
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        return _candidates([]), _problem(name, None, None, f"not valid JSON: {exc}")
    if not isinstance(tasks, list):
        return _candidates([]), _problem(name, None, None, (
            f"a JSON {type(tasks).__name__} where a Label Studio export (a JSON list "
            "of tasks) was expected; export the project as JSON"))
    rows, problems, ordinal = [], [], 0
    for t_index, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        annotations = task.get("annotations", []) if isinstance(task, dict) else None
        if not isinstance(data, dict) or not isinstance(annotations, list):
            ordinal += 1
            problems.append(_problem_row(name, ordinal, None, None, (
                f"{name} task #{t_index}: not a Label Studio task (needs a 'data' object "
                "and an 'annotations' list)"), json.dumps(task)[:2000]))
            continue
        for ann in annotations:
            ordinal += 1
            raw = json.dumps({"task_id": task.get("id"), "data_trace_id": data.get("trace_id"),
                              "annotation": ann})
            if not isinstance(ann, dict):
                problems.append(_problem_row(name, ordinal, _text(data.get("trace_id")), None,
                                             f"{name} row {ordinal}: annotation is not a JSON object", raw))
                continue
            annotator = _annotator(ann.get("completed_by"))
            if ann.get("was_cancelled"):
                problems.append(_problem_row(name, ordinal, _text(data.get("trace_id")), annotator, (
                    f"{name} row {ordinal} (task {task.get('id')}): the annotation was skipped "
                    "(was_cancelled) in Label Studio, so it holds no label"), raw))
                continue
            result = ann.get("result") or []
            rows.append({
                "source_row": ordinal,
                "trace_id": _text(data.get("trace_id")),
                "annotator_id": annotator,
                "verdict": _control_text(result, VERDICT_CONTROL, "choices", ","),
                "failure_category": _control_text(result, CATEGORY_CONTROL, "choices", ","),
                "rubric_version": _text(data.get("rubric_version")),
                "labeled_at": _text(ann.get("updated_at") or ann.get("created_at")),
                "notes": _control_text(result, NOTES_CONTROL, "text", "\n"),
                "source": _text(data.get("label_source")),
                "raw_record": raw,
            })
    return _candidates(rows), _problems(problems)


def _annotator(completed_by: object) -> str | None:
    """Label Studio's `completed_by`: an int user id, or a user object (email preferred)."""
    if isinstance(completed_by, dict):
        if completed_by.get("email"):
            return str(completed_by["email"])
        completed_by = completed_by.get("id")
    if completed_by is None or completed_by == "":
        return None
    return f"label_studio_user:{completed_by}"


def _control_text(result: list, control: str, key: str, sep: str) -> str | None:
    values = [str(v) for r in result if isinstance(r, dict) and r.get("from_name") == control
              for v in (r.get("value") or {}).get(key) or []]
    return sep.join(values) if values else None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _candidates(rows: list[dict]) -> pl.DataFrame:
    return _conform(pl.DataFrame(rows, schema={k: v for k, v in CANDIDATE_COLUMNS.items()
                                               if k not in ("source_file", "file_sha256")}),
                    CANDIDATE_COLUMNS)


def _problem_row(name: str, row: int | None, trace_id: str | None, annotator: str | None,
                 reason: str, raw: str | None = None) -> dict:
    return {"source_file": name, "source_row": row, "file_sha256": None, "trace_id": trace_id,
            "annotator_id": annotator, "field": None, "reason": reason, "raw_record": raw}


def _problems(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=QUARANTINE_COLUMNS)


def _problem(name: str, row: int | None, sha: str | None, reason: str) -> pl.DataFrame:
    return _problems([{**_problem_row(name, row, None, None, f"{name}: {reason}"), "file_sha256": sha}])


def _conform(df: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """`df` with exactly `schema`'s columns, in order (missing ones as nulls)."""
    return df.select([
        (pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c) for c, t in schema.items()
    ])


# ------------------------------------------------------------------- validation

def validate_labels(
    candidates: pl.DataFrame,
    known_trace_ids: pl.Series | set[str],
    known_rubric_versions: Mapping[str, Sequence[str]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted rows typed as LABEL_COLUMNS, quarantined rows with one reason per problem).

    Text is trimmed; verdict and failure_category are compared in lower case. A row
    with several problems is quarantined once, its reasons joined by "; ".
    """
    known_ids = pl.Series("k", sorted(known_trace_ids) if isinstance(known_trace_ids, set)
                          else known_trace_ids, dtype=pl.String)
    versions = sorted(known_rubric_versions)
    known_list = ", ".join(versions) or "none"
    version_frame = pl.DataFrame({
        "rubric_version": versions,
        "_allowed": [", ".join(known_rubric_versions[v]) for v in versions],
    }, schema={"rubric_version": pl.String, "_allowed": pl.String})
    pair_frame = pl.DataFrame(
        [(v, c, True) for v in versions for c in known_rubric_versions[v]],
        schema={"rubric_version": pl.String, "failure_category": pl.String, "_cat_ok": pl.Boolean},
        orient="row",
    )
    df = (
        _conform(candidates, CANDIDATE_COLUMNS).with_row_index("_i")
        .with_columns(_blank_to_null(pl.col(f)).alias(f) for f in LABEL_FIELDS if f != "notes")
        .with_columns(pl.col("verdict", "failure_category").str.to_lowercase(),
                      pl.col("source").fill_null("annotation"))
        .join(version_frame, on="rubric_version", how="left", maintain_order="left")
        .join(pair_frame, on=["rubric_version", "failure_category"], how="left", maintain_order="left")
        .with_columns(_parse_utc(pl.col("labeled_at")).alias("_ts"))
    )
    tid, ver, cat, rv, lat = (pl.col(c) for c in ("trace_id", "verdict", "failure_category",
                                                 "rubric_version", "labeled_at"))
    allowed = pl.col("_allowed")
    checks: list[tuple[str, pl.Expr, pl.Expr]] = [
        ("trace_id", tid.is_null(), pl.lit("trace_id is empty")),
        ("trace_id", ~tid.is_in(known_ids.implode()),
         pl.format("trace_id '{}' is not a known trace (not in raw_traces: check for a typo "
                   "or a trace from another environment)", tid)),
        ("annotator_id", pl.col("annotator_id").is_null(),
         pl.lit("annotator_id is empty: say who labeled the row")),
        ("verdict", ver.is_null(), pl.lit("verdict is empty: must be pass or fail")),
        ("verdict", ~ver.is_in(VERDICTS), pl.format("verdict '{}' is not pass or fail", ver)),
        ("rubric_version", rv.is_null(), pl.lit(f"rubric_version is empty (known: {known_list})")),
        ("rubric_version", rv.is_not_null() & allowed.is_null(),
         pl.format("rubric_version '{}' does not exist (known: {})", rv, pl.lit(known_list))),
        ("failure_category", cat.is_not_null() & allowed.is_not_null() & pl.col("_cat_ok").is_null(),
         pl.format("failure_category '{}' is not in rubric {} (allowed: {})", cat, rv, allowed)),
        ("failure_category", (ver == "fail") & cat.is_null(),
         pl.format("verdict fail needs a failure_category (one of: {})",
                   allowed.fill_null("the rubric's categories"))),
        ("failure_category", (ver == "pass") & cat.is_not_null(),
         pl.format("verdict pass must not carry a failure_category (got '{}'): clear it or "
                   "change the verdict to fail", cat)),
        ("labeled_at", lat.is_null(), pl.lit("labeled_at is empty")),
        ("labeled_at", lat.is_not_null() & pl.col("_ts").is_null(),
         pl.format("labeled_at '{}' is not an ISO-8601 time such as 2024-05-06T14:03:00Z", lat)),
        ("source", ~pl.col("source").is_in(FILE_SOURCES),
         pl.format("source '{}' is not one of {}", pl.col("source"), pl.lit(", ".join(FILE_SOURCES)))),
    ]
    df = df.with_columns(
        pl.concat_str([pl.when(cond).then(msg) for _, cond, msg in checks],
                      separator="; ", ignore_nulls=True).alias("_why"),
        pl.concat_str([pl.when(cond).then(pl.lit(f)) for f, cond, _ in checks],
                      separator=",", ignore_nulls=True).alias("_fields"),
    ).with_columns(pl.col("_fields").str.split(",").list.unique(maintain_order=True).list.join(","))
    bad = pl.col("_why") != ""
    quarantined = df.filter(bad).select(
        "source_file", "source_row", "file_sha256", "trace_id", "annotator_id",
        pl.col("_fields").alias("field"),
        pl.format("{} row {}: {}", pl.col("source_file").fill_null("(no file)"),
                  pl.col("source_row").cast(pl.String).fill_null("?"), "_why").alias("reason"),
        "raw_record",
    )
    accepted = df.filter(~bad).with_columns(
        pl.col("_ts").alias("labeled_at"),
        _blank_to_null(pl.col("notes")).alias("notes"),
    )
    return with_label_id(accepted).select(LABEL_COLUMNS.keys()), _conform(quarantined, QUARANTINE_COLUMNS)


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    trimmed = expr.str.strip_chars()
    return pl.when(trimmed == "").then(None).otherwise(trimmed)


def _parse_utc(expr: pl.Expr) -> pl.Expr:
    """ISO-8601 text → UTC datetime (null when unparseable); naive times are read as UTC.

    DuckDB's TIMESTAMPTZ cast accepts every ISO-8601 spelling (Z, ±hh:mm, ±hhmm,
    fractions, date only) in one vectorized call; polars would need one format per spelling.
    """
    def parse(s: pl.Series) -> pl.Series:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("t", s.to_frame("s").with_row_index("i"))
        out = con.sql("SELECT TRY_CAST(s AS TIMESTAMPTZ) AS ts FROM t ORDER BY i").pl()["ts"]
        return out.cast(pl.Datetime("us", "UTC"))
    return expr.map_batches(parse, return_dtype=pl.Datetime("us", "UTC"))


def with_label_id(labels: pl.DataFrame) -> pl.DataFrame:
    """Adds `label_id`: a stable hash of what the label says and who said it, when.

    Two rows with the same id are the same label, whichever file they came from.
    """
    key = pl.concat_str(
        [pl.col(c).cast(pl.String).fill_null("\x00") for c in
         ("source", "trace_id", "annotator_id", "rubric_version", "verdict", "failure_category", "notes")]
        + [pl.col("labeled_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").fill_null("\x00")],
        separator="\x1f",
    )

    def sha(s: pl.Series) -> pl.Series:
        con = duckdb.connect()
        con.register("k", s.to_frame("k").with_row_index("i"))
        return con.sql("SELECT left(sha256(k), 32) AS h FROM k ORDER BY i").pl()["h"]
    return labels.with_columns(key.map_batches(sha, return_dtype=pl.String).alias("label_id"))


# ------------------------------------------------------------------ merge/history

def merge_labels(
    existing_history: pl.DataFrame | None,
    accepted_new: pl.DataFrame,
    *,
    quarantined: pl.DataFrame | int = 0,
    imported_at: datetime | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """(new human_labels history, import stats) after adding `accepted_new`.

    A row is a duplicate when its file was imported before (same file_sha256) or an
    identical label (same label_id) is already in history or earlier in this batch.
    Per (source, trace_id, annotator_id, rubric_version) the label with the latest
    labeled_at is current (ties: the later import, then file and row); each older one
    keeps its row with is_current = false and superseded_by = the label that followed it.
    Stats: read = accepted + duplicates + quarantined; superseded = rows newly made non-current.
    """
    history = (_conform(existing_history, HUMAN_LABEL_COLUMNS) if existing_history is not None
               else pl.DataFrame(schema=HUMAN_LABEL_COLUMNS))
    imported_at = imported_at or datetime.now(timezone.utc)
    new = _conform(accepted_new, LABEL_COLUMNS)
    seen_files = history["file_sha256"].drop_nulls().unique().implode()
    duplicate = (pl.col("file_sha256").is_in(seen_files).fill_null(False)
                 | pl.col("label_id").is_in(history["label_id"].implode())
                 | ~pl.col("label_id").is_first_distinct())
    new = new.with_columns(duplicate.alias("_dup"))
    added = new.filter(~pl.col("_dup")).with_columns(
        pl.lit(imported_at).cast(pl.Datetime("us", "UTC")).alias("imported_at"),
        pl.lit(True).alias("is_current"),
        pl.lit(None, pl.String).alias("superseded_by"),
    ).select(HUMAN_LABEL_COLUMNS.keys())
    merged = pl.concat([history, added]).with_columns(
        pl.col("label_id").shift(-1).over(
            _SUPERSEDE_KEY,
            order_by=["labeled_at", "imported_at", "source_file", "source_row", "label_id"],
        ).alias("superseded_by"),
    ).with_columns(pl.col("superseded_by").is_null().alias("is_current"))
    n_quarantined = quarantined if isinstance(quarantined, int) else quarantined.height
    n_dup = int(new["_dup"].sum())
    stats = {
        "read": added.height + n_dup + n_quarantined,
        "accepted": added.height,
        "duplicates": n_dup,
        "quarantined": n_quarantined,
        "superseded": int((~merged["is_current"]).sum() - (~history["is_current"]).sum()),
    }
    return merged, stats


def current_labels(history: pl.DataFrame, source: str | None = None) -> pl.DataFrame:
    """The rows that count: current ones, optionally of one source."""
    out = history.filter(pl.col("is_current"))
    return out if source is None else out.filter(pl.col("source") == source)


# ------------------------------------------------------------------- escalations

ESCALATION_CATEGORY: dict[str, str] = {
    reason: ("could_not_answer" if reason == "agent_could_not_answer" else reason)
    for reason in ESCALATION_REASONS if reason != "user_requested_human"
}


def escalation_labels(traces: pl.DataFrame, rubric_version: str) -> pl.DataFrame:
    """Escalations with a failure reason as `source = "escalation"` fail labels (LABEL_COLUMNS).

    `user_requested_human` says nothing about the answer, so it yields no label; a reason
    outside the contract maps to `other` (the raw reason stays in `notes`).
    labeled_at is the trace's timestamp.
    """
    reason = pl.col("escalation_reason").str.strip_chars()
    escalated = pl.col("escalated").fill_null(False) if "escalated" in traces.columns else pl.lit(True)
    rows = traces.filter(escalated & reason.is_not_null() & (reason != "")
                         & (reason != "user_requested_human"))
    labels = rows.select(
        pl.col("trace_id"),
        pl.lit(ESCALATION_ANNOTATOR).alias("annotator_id"),
        pl.lit("fail").alias("verdict"),
        reason.replace_strict(ESCALATION_CATEGORY, default="other", return_dtype=pl.String)
        .alias("failure_category"),
        pl.lit(rubric_version).alias("rubric_version"),
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")).alias("labeled_at"),
        pl.format("escalation_reason={}", reason).alias("notes"),
        pl.lit("escalation").alias("source"),
    )
    return with_label_id(_conform(labels, {k: v for k, v in LABEL_COLUMNS.items() if k != "label_id"})
                         ).select(LABEL_COLUMNS.keys())
