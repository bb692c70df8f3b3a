"""A snapshot's bytes and content hash: canonical JSON lines, sha256 over them.

The hash is what `snapshot_unchanged` re-derives and what `cases.jsonl` hashes to, so
it must not move: Python's json module (sorted keys, compact, UTF-8), never a Polars
writer, and the columns of the `EvalSetSnapshots` model.
"""

import hashlib
import json
from datetime import date, datetime

import polars as pl

from feedback_pipeline.evalset.schemas import EvalSetSnapshots
from feedback_pipeline.frames import conform

HASH_SCHEME = "sha256/jsonl-sorted-v1"


def canonical_lines(rows: pl.DataFrame) -> list[str]:
    """One JSON object per case (snapshot columns, keys sorted, compact, UTF-8), by case_id.

    Dates are ISO strings; context is a list of objects. Python's json module, not a
    Polars writer, so the bytes do not depend on the Polars version.
    """
    lines = [(row["case_id"] or "", json.dumps(row, sort_keys=True, ensure_ascii=False,
                                                separators=(",", ":"), default=_json_value))
             for row in conform(rows, EvalSetSnapshots).iter_rows(named=True)]
    return [line for _, line in sorted(lines)]


def content_hash(rows: pl.DataFrame) -> str:
    """sha256 of the canonical lines, each followed by "\\n" (= sha256sum of cases.jsonl)."""
    return lines_hash(canonical_lines(rows))


def lines_hash(lines: list[str]) -> str:
    """`content_hash` of rows already turned into `canonical_lines` (so they are built once)."""
    return hashlib.sha256(jsonl_text(lines).encode("utf-8")).hexdigest()


def jsonl_text(lines: list[str]) -> str:
    """The lines as a JSONL file's text (each followed by "\\n")."""
    return "".join(f"{line}\n" for line in lines)


def _json_value(value: object) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__} in a snapshot row")
