"""The two text formats of label files: CSV (a header, one label per row) and JSONL.

Each reader takes the decoded text and returns (candidate rows as text, problem rows);
`reading.py` picks the reader and handles whole-file problems, `label_studio_export.py`
reads Label Studio's JSON export.
"""

import duckdb
import polars as pl

from feedback_pipeline.labels.shapes import (
    CANDIDATE_COLUMNS, LABEL_FIELDS, QUARANTINE_COLUMNS, REQUIRED_FILE_COLUMNS, candidates, conform_to,
    file_problem, problems,
)


def read_csv_labels(text: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A CSV with (at least) the required columns; header names are trimmed and lower-cased."""
    try:
        df = pl.read_csv(text.encode(), infer_schema=False)
    except Exception as exc:  # polars raises several types for malformed CSV
        return candidates([]), file_problem(name, None, f"could not parse the CSV: {exc}")
    df = df.rename({c: c.strip().lower() for c in df.columns})
    missing = [c for c in REQUIRED_FILE_COLUMNS if c not in df.columns]
    if missing:
        delimiter = next((d for d in (";", "\t", "|") if len(df.columns) == 1 and d in df.columns[0]), None)
        hint = f" (the file seems to use {delimiter!r} as its delimiter: save it comma-separated)" if delimiter else ""
        return candidates([]), file_problem(name, None, (
            f"the header lacks column(s) {', '.join(missing)}; expected "
            f"{', '.join(REQUIRED_FILE_COLUMNS)} (notes, source optional){hint}"))
    df = df.with_row_index("source_line", offset=1).with_columns(
        pl.col("source_line").cast(pl.Int64),
        pl.struct(pl.all().exclude("source_line")).struct.json_encode().alias("raw_text"),
        *[pl.lit(None, pl.String).alias(f) for f in LABEL_FIELDS if f not in df.columns],
    )
    return conform_to(df, CANDIDATE_COLUMNS), problems([])


def read_jsonl_labels(text: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One JSON object per line; a line that is not one is a problem row, the others are kept."""
    # One split into lines, then DuckDB's JSON functions per column: a bad line is
    # flagged by json_valid instead of failing the whole file as read_ndjson would.
    lines = pl.DataFrame({"line": text.split("\n")}).with_row_index("source_line", offset=1)
    lines = lines.filter(pl.col("line").str.strip_chars() != "")
    # DuckDB evaluates CASE branches eagerly, so invalid lines are swapped for a
    # harmless literal before any JSON function sees them.
    extract = ", ".join(f"{f} := json_extract_string(obj, '$.{f}')" for f in LABEL_FIELDS)
    con = duckdb.connect()
    con.register("lines", lines)
    parsed = con.sql(f"""
        WITH valid AS (
            SELECT source_line, line, json_valid(line) AS is_json,
                   CASE WHEN json_valid(line) THEN line ELSE 'null' END AS j
            FROM lines),
        typed AS (
            SELECT *, json_type(j) AS json_kind,
                   CASE WHEN json_type(j) = 'OBJECT' THEN j ELSE '{{}}' END AS obj
            FROM valid)
        SELECT source_line::BIGINT AS source_line, line AS raw_text,
               is_json AND json_kind = 'OBJECT' AS ok,
               CASE WHEN is_json THEN json_kind END AS json_kind,
               struct_pack({extract}) AS f
        FROM typed ORDER BY source_line""").pl()
    good = parsed.filter("ok").unnest("f")
    bad = parsed.filter(~pl.col("ok")).select(
        pl.lit(name).alias("source_file"), "source_line",
        pl.when(pl.col("json_kind").is_null())
        .then(pl.format("{} line {}: not valid JSON; each line must be one JSON object", pl.lit(name), "source_line"))
        .otherwise(pl.format("{} line {}: a JSON {} where an object was expected", pl.lit(name), "source_line",
                             pl.col("json_kind").str.to_lowercase()))
        .alias("reason"),
        "raw_text",
    )
    return conform_to(good, CANDIDATE_COLUMNS), conform_to(bad, QUARANTINE_COLUMNS)
