"""The landing folder as files: which files are candidates, their bytes, their fallback week.

Everything about a landing *file* that does not depend on what format it holds:
listing (any depth, sorted), reading (gunzip), the errors an unreadable file raises,
and the week a file is filed under when no record in it has a usable timestamp.
Which format a file holds is decided by content in `sources/detect.py`; parsing
lives in `parse.py` and the modules it calls.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from isal import igzip, isal_zlib


from feedback_pipeline.weeks import WEEK, current_week, monday_of

# What an unreadable (corrupt, truncated, not-really-Parquet) file raises.
UNREADABLE = (duckdb.IOException, duckdb.InvalidInputException, OSError, EOFError, pa.ArrowException,
              isal_zlib.error)


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped by ISA-L (isal): 4-5x faster than zlib, which was a
    quarter of the ingest time for gzip landing files."""
    data = path.read_bytes()
    return igzip.decompress(data) if path.name.endswith(".gz") else data


def lenient_lines(path: Path) -> pl.DataFrame:
    """The file's lines (bytes that are not UTF-8 replaced by U+FFFD), numbered from 1."""
    text = read_file_bytes(path).decode("utf-8", errors="replace").split("\n")
    if text and text[-1] == "":
        text.pop()
    return pl.DataFrame({"line": text}).with_row_index("source_line", offset=1).with_columns(
        pl.col("source_line").cast(pl.Int64)
    )


def fallback_week(path: Path):
    """Week for a file with no usable timestamp: its modification week, or the last
    closed week if it was modified this week (so it shows in a partition someone runs)."""
    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return min(monday_of(modified), current_week() - WEEK)
