"""Files on disk, written whole or not at all, and named by their content.

A reader (an annotator's tool, an analyst, the next run) never sees half a file: every
writer stages under a temporary name in the same folder and renames into place.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write `path` atomically: bytes, text (UTF-8), or a function that writes a given path
    (e.g. `frame.write_parquet`). Replaces an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes: how a label file is known to be imported already."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
