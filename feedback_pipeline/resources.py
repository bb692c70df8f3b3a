"""Resources for every external thing: the home folder and its warehouse (a DuckDB file,
or a DuckLake: `warehouse_location.py`).

Keep asset logic out of this module; it only says where things live and how to
open them. Paths are resolved when a run uses the resource, never at import.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
import duckdb

from feedback_pipeline.warehouse_location import WarehouseLocation, connect, location_from_env

DEFAULT_HOME = ".feedback_home"


class FeedbackHome(dg.ConfigurableResource):
    """The one home folder: landing/, labels/inbox/, exports/, warehouse.duckdb.

    `path` empty means $FEEDBACK_PIPELINE_HOME, else `.feedback_home` in the working dir.
    """

    path: Optional[str] = None
    lock_timeout_s: float = 1800.0  # how long to wait while another process holds the warehouse

    @property
    def root(self) -> Path:
        root = Path(self.path or os.environ.get("FEEDBACK_PIPELINE_HOME") or DEFAULT_HOME)
        return root.resolve()

    @property
    def landing(self) -> Path:
        return self._dir("landing")

    @property
    def labels_inbox(self) -> Path:
        return self._dir("labels", "inbox")

    @property
    def exports(self) -> Path:
        return self._dir("exports")

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file, when the warehouse is one (`warehouse_location` for a lake)."""
        return self.root / "warehouse.duckdb"

    @property
    def warehouse_location(self) -> WarehouseLocation:
        """Where the warehouse is: `$FEEDBACK_PIPELINE_WAREHOUSE`, else the DuckDB file above."""
        return location_from_env(self.root)

    def warehouse_exists(self) -> bool:
        """False only for a DuckDB file not created yet (a lake is created on first attach)."""
        location = self.warehouse_location
        return location.is_lake or location.file.exists()

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the warehouse. A DuckDB file admits one writing process: while
        another holds it, wait (up to `lock_timeout_s`) instead of failing. (Opened with
        duckdb itself: dagster-duckdb's resource gives up after ~100 s, shorter than a
        judge-heavy step, and costs ~60 ms of import in every run and sensor process.)
        A DuckLake admits several writers: it opens at once or raises naming the lake."""
        self.root.mkdir(parents=True, exist_ok=True)
        location = self.warehouse_location
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = connect(location, read_only=read_only)
                break
            except duckdb.IOException as exc:
                if location.is_lake or "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(0.5, 1.5))
        try:
            yield con
        finally:
            con.close()
