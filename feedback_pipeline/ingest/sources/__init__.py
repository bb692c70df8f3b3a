"""Tracing tools' exports read as they are: detect each file's format, convert spans to contract records.

stub
"""

from __future__ import annotations

from pathlib import Path


def split_by_format(landing_dir: Path, files: list[Path]):
    return files, [], {str(p.relative_to(landing_dir)): "contract" for p in files}


def convert_sources(con, landing_dir, foreign, formats):
    con.execute("CREATE OR REPLACE TEMP TABLE span_keys (source_file VARCHAR, trace_id VARCHAR, week DATE)")
    return None
