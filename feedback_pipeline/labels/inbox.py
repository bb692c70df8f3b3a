"""The label inbox: which files under labels/inbox/ are label files, and which are new.

Shared by the import asset, the inbox sensor and the CLI; reading a file's rows is
`labels.reading`'s.
"""

from pathlib import Path

from feedback_pipeline.files import file_sha256

LABEL_FILE_SUFFIXES = (".csv", ".jsonl", ".json")


def inbox_files(inbox: Path) -> list[Path]:
    """Every label file under `inbox`, in path order."""
    return sorted(p for p in inbox.rglob("*") if p.is_file() and p.name.endswith(LABEL_FILE_SUFFIXES))


def new_inbox_files(inbox: Path, imported_hashes: set[str]) -> list[tuple[str, Path]]:
    """(path relative to `inbox`, path) of every label file whose content was not imported before."""
    return [(str(p.relative_to(inbox)), p) for p in inbox_files(inbox) if file_sha256(p) not in imported_hashes]
