"""Which files under landing/ are landing files: listing only, by name (no reading).

Kept apart from `landing.py` (reading, gunzip, the errors of unreadable files) so the
landing sensor, which only lists and stats files every tick, imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

# The contract's files, and the files tracing tools export (told apart by content).
LANDING_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".json", ".json.gz", ".ndjson", ".ndjson.gz",
                    ".csv", ".csv.gz")
# The optional mapping of folders to formats (`sources/config.py`): configuration, not data.
SOURCES_CONFIG = "sources.yaml"


def landing_files(landing_dir: Path) -> tuple[list[Path], list[str]]:
    """Landing files under `landing_dir` (any depth, sorted), and the names skipped."""
    files, skipped = [], []
    for path in sorted(p for p in landing_dir.rglob("*") if p.is_file()):
        if path.name == SOURCES_CONFIG and path.parent == landing_dir:
            continue
        (files if path.name.endswith(LANDING_SUFFIXES) else skipped).append(path)
    return files, [str(p.relative_to(landing_dir)) for p in skipped]
