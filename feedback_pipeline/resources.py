"""Resources for every external thing: the home folder and its DuckDB warehouse.

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
        return self.root / "warehouse.duckdb"

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to the warehouse. DuckDB admits one process per file:
        while another holds it, wait (up to `lock_timeout_s`) instead of failing. (Opened
        with duckdb itself: dagster-duckdb's resource gives up after ~100 s, shorter than a
        judge-heavy step, and costs ~60 ms of import in every run and sensor process.)"""
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.warehouse_path))
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
            time.sleep(random.uniform(0.5, 1.5))
        try:
            con.execute("SET TimeZone='UTC'")
            yield con
        finally:
            con.close()
