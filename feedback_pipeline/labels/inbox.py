"""The label inbox: which files under labels/inbox/ are label files.

Shared by the import asset, the inbox sensor and the CLI; reading a file's rows is
`labels.parse`'s job.
"""

from pathlib import Path

LABEL_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


def inbox_files(inbox: Path) -> list[Path]:
    """Every label file under `inbox`, in path order."""
    return sorted(p for p in inbox.rglob("*") if p.is_file() and p.name.endswith(LABEL_FILE_SUFFIXES))
