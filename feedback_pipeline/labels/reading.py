"""One label file → (candidate rows as text, problems found while reading).

Picks the reader by extension, refuses what cannot be read as a whole file (unknown
extension, empty, not UTF-8) with one quarantine row, and tags every row with the file
and its hash. The format readers are `text_files.py` (CSV, JSONL) and
`label_studio_export.py`; judging the rows' content is `validation.py`'s.
"""

import hashlib
from pathlib import Path

import polars as pl

from feedback_pipeline.labels.label_studio_export import read_label_studio_export
from feedback_pipeline.labels.shapes import CANDIDATE_COLUMNS, QUARANTINE_COLUMNS, candidates, file_problem
from feedback_pipeline.labels.text_files import read_csv_labels, read_jsonl_labels


def read_label_file(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(candidate label rows as text, problems found while reading) for one inbox file.

    `source_line` is the 1-based data row for CSV (header not counted), the physical
    line for JSONL, and the annotation's ordinal in file order for Label Studio.
    Each problem row counts as one record read.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        return candidates([]), file_problem(path.name, None, f"could not read the file: {exc}")
    sha = hashlib.sha256(content).hexdigest()
    reader = {".csv": read_csv_labels, ".jsonl": read_jsonl_labels, ".ndjson": read_jsonl_labels,
              ".json": read_label_studio_export}.get(path.suffix.lower())
    if reader is None:
        return candidates([]), file_problem(path.name, sha, (
            f"unknown extension '{path.suffix}': label files must be .csv, .jsonl "
            "or .json (a Label Studio JSON export); rename or remove the file"))
    if not content.strip():
        return candidates([]), file_problem(path.name, sha, "the file is empty")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return candidates([]), file_problem(path.name, sha, f"the file is not UTF-8 text: {exc}")
    found, problems = reader(text, path.name)
    if found.is_empty() and problems.is_empty():
        problems = file_problem(path.name, None, (
            "the file holds no label rows (a header only, or a Label Studio export without "
            "annotations): label the traces first, or remove the file"))
    tag = [pl.lit(path.name).alias("source_file"), pl.lit(sha).alias("file_sha256")]
    return (found.with_columns(tag).select(CANDIDATE_COLUMNS.keys()),
            problems.with_columns(tag).select(QUARANTINE_COLUMNS.keys()))

