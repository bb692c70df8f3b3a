"""The frames the label import passes between its steps, and the label vocabulary.

Table shapes derive from the Pandera models in `schemas.py`; the one shape restated
here, `CANDIDATE_COLUMNS`, is not a table: it is a label file's fields as the text
found in the file, before validation types them. Also the constructors of candidate and
problem rows the file readers share. Reading, validating and merging are in their own
modules.
"""

import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.labels.schemas import HumanLabels, LabelQuarantine

LABEL_FIELDS: tuple[str, ...] = (
    "trace_id", "annotator_id", "verdict", "failure_category", "rubric_version",
    "labeled_at", "notes", "source",
)
REQUIRED_FILE_COLUMNS: tuple[str, ...] = LABEL_FIELDS[:6]
# Sources a label file may declare (optional `source` column; Label Studio:
# `data.label_source`). Escalation labels come from traces, never from files.
FILE_SOURCES: tuple[str, ...] = ("annotation", "adjudication")
ESCALATION_ANNOTATOR = "escalation"

# human_labels, and its rows before the import gives them history columns.
HUMAN_LABEL_COLUMNS: dict[str, pl.DataType] = polars_schema(HumanLabels)
HISTORY_COLUMNS: tuple[str, ...] = ("imported_at", "is_current", "superseded_by")
LABEL_COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in HUMAN_LABEL_COLUMNS.items() if k not in HISTORY_COLUMNS}
# label_quarantine's rows before the import stamps quarantined_at.
QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    k: v for k, v in polars_schema(LabelQuarantine).items() if k != "quarantined_at"}
# What the file readers return: every field as the text found in the file.
CANDIDATE_COLUMNS: dict[str, pl.DataType] = {
    "source_file": pl.String, "source_line": pl.Int64, "file_sha256": pl.String,
    **{f: pl.String for f in LABEL_FIELDS}, "raw_text": pl.String,
}


def conform_to(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """`df` with exactly `schema`'s columns, in order (missing ones as nulls)."""
    return df.select([
        (pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c) for c, t in schema.items()
    ])


def candidates(rows: list[dict]) -> pl.DataFrame:
    """Candidate rows (dicts of the label fields, source_line, raw_text) as CANDIDATE_COLUMNS."""
    return conform_to(pl.DataFrame(rows, schema={k: v for k, v in CANDIDATE_COLUMNS.items()
                                                 if k not in ("source_file", "file_sha256")}),
                      CANDIDATE_COLUMNS)


def problem_row(name: str, line: int | None, trace_id: str | None, annotator: str | None,
                reason: str, raw: str | None = None) -> dict:
    return {"source_file": name, "source_line": line, "file_sha256": None, "trace_id": trace_id,
            "annotator_id": annotator, "field": None, "reason": reason, "raw_text": raw}


def problems(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=QUARANTINE_COLUMNS)


def file_problem(name: str, sha: str | None, reason: str) -> pl.DataFrame:
    """One quarantine row refusing the whole file `name`."""
    return problems([{**problem_row(name, None, None, None, f"{name}: {reason}"), "file_sha256": sha}])
