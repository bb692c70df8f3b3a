"""Dagster's own SQLite storage (runs, events and schedules under $DAGSTER_HOME, the same
files and layout as Dagster's default), with each database's engine kept open, and its
local compute logs mirrored by a thread: the defaults of `LocalDagsterInstance`, the
instance class dagster.yaml names.

Why this is written here: Dagster's SQLite storages build a new SQLAlchemy engine, and
open the file, for every query (NullPool), and make each run's shard through alembic; its
compute log manager starts four processes per step. A run's bookkeeping is hundreds of
queries, an automation tick thousands: that bookkeeping cost more than the runs' own work
on this project's weekly chain. Measured (`benchmarks/dagster_storage.py`): 0.35 s of
bookkeeping per run with Dagster's defaults, 0.07 s with these (0.05 s in memory).
Everything else is Dagster's: the schema, its migrations, the per-run shards, the single
lock held around each query, the log files the UI reads. A `storage:` or `compute_logs:`
key in dagster.yaml still wins (PostgreSQL: docs/dagster.postgres.yaml).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import sqlalchemy as db
import yaml
from dagster._core.execution.compute_logs import _fileno
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory, _runs_directory
from dagster._serdes import ConfigurableClassData

# Engines kept per process for the run-sharded event logs: the index, plus the runs
# being written or read lately (a UI process browsing old runs reopens the older ones).
KEPT_ENGINES = 8


def kept_engine(conn_string: str) -> db.Engine:
    """One engine per database file, shared by the storage's threads under its own lock."""
    engine = db.create_engine(
        conn_string, pool_size=1, max_overflow=4,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})

    @db.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # The files are in WAL mode (Dagster sets it); NORMAL syncs at checkpoints, not on
        # every event: a power cut may lose the last events, never corrupt the file.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    return engine


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log, keeping the last `KEPT_ENGINES` engines."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, db.Engine] = OrderedDict()
        self._template: bytes | None = None  # an empty run shard's file (`_copy_template`)
        super().__init__(base_dir, inst_data=inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        with self._db_lock:  # as Dagster's: one query at a time per storage object
            engine = self._engines.pop(shard, None) or kept_engine(self.conn_string_for_shard(shard))
            self._engines[shard] = engine
            while len(self._engines) > KEPT_ENGINES:
                self._engines.popitem(last=False)[1].dispose()
            if shard not in self._initialized_dbs:
                if not self._copy_template(shard):
                    self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _copy_template(self, shard: str) -> bool:
        """Make a new run's shard as a copy of an empty one this process made with Dagster's
        own `_initdb` (schema, WAL, alembic stamp): `_initdb` per shard re-reads the alembic
        scripts, ~45 ms of every run. False when the file exists (or appears meanwhile): then
        Dagster's `_initdb` checks it as usual."""
        path = self.path_for_shard(shard)
        if shard == INDEX_SHARD_NAME or os.path.exists(path):
            return False
        if self._template is None:
            with tempfile.TemporaryDirectory() as tmp:
                engine = db.create_engine(create_db_conn_string(tmp, "template"), poolclass=db.NullPool)
                self._initdb(engine)
                engine.dispose()
                with sqlite3.connect(os.path.join(tmp, "template.db")) as con:
                    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                with open(os.path.join(tmp, "template.db"), "rb") as f:
                    self._template = f.read()
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            f.write(self._template)
        try:
            os.link(partial, path)  # never over a shard another process just made
        except FileExistsError:
            return False
        finally:
            os.unlink(partial)
        return True

    def _dispose_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._dispose_engines()  # the files are deleted: no connection may keep the old ones
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()


class PooledSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage (runs.db) on one kept engine."""

    def __init__(self, conn_string: str, inst_data=None):
        super().__init__(conn_string, inst_data=inst_data)
        self._engine = kept_engine(conn_string)

    @classmethod
    def from_local(cls, base_dir: str, inst_data=None) -> PooledSqliteRunStorage:
        # Dagster's own from_local makes the folder and the schema (or migrates it) first.
        SqliteRunStorage.from_local(base_dir, inst_data=inst_data).dispose()
        return cls(create_db_conn_string(base_dir, "runs"), inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[db.Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (`DagsterSqliteStorage`) with kept engines."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data=inst_data)
        self._run_storage.dispose()
        self._event_log_storage.dispose()
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class LocalDagsterInstance(dg.DagsterInstance):
    """`instance_class:` in dagster.yaml: Dagster's instance, whose storage by default is
    `PooledSqliteStorage` in the instance's folder. (A default, not a `storage: custom:`
    entry, because only defaults are given the folder: `DagsterInstance.from_config(dir)`
    and every process started with DAGSTER_HOME=dir then use the same files.)"""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__, PooledSqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        defaults["compute_logs"] = ConfigurableClassData(
            __name__, ThreadMirroredComputeLogManager.__name__, defaults["compute_logs"].config_yaml)
        return defaults


class ThreadMirroredComputeLogManager(LocalComputeLogManager):
    """Dagster's local compute logs (the same files, which the UI shows per step), with the
    step's stdout and stderr mirrored to the terminal by a thread of this process. Dagster's
    own mirror starts a `tail -F` and a Python watcher process per stream, four processes
    per step: ~25 ms of this process's time a step and a second core kept busy (a demo
    runs ~350 steps)."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> ThreadMirroredComputeLogManager:
        return cls(inst_data=inst_data, **config_value)  # Dagster's names its own class

    @contextmanager
    def capture_logs(self, log_key):
        if os.name == "nt":  # no pipes to dup2 there: Dagster's own
            with super().capture_logs(log_key) as context:
                yield context
            return
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with _mirrored(sys.stdout, out), _mirrored(sys.stderr, err):
            yield CapturedLogContext(log_key)
        with open(self.complete_artifact_path(log_key), "a"):  # the capture is complete
            pass


_PIPE_BYTES = 1 << 20  # room for C code that writes while holding the GIL (the copier needs it)


@contextmanager
def _mirrored(stream, path: str) -> Iterator[None]:
    """While the block runs, what is written to `stream`'s file descriptor (by Python or by
    C code) is appended to `path` and copied to where the descriptor pointed before."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "a").close()
    fd = _fileno(stream)
    if not fd:  # no descriptor (a test runner's stand-in stream): nothing to capture, as Dagster's
        yield
        return
    stream.flush()
    read_end, write_end = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # Linux only
    except (AttributeError, OSError):
        pass
    original, terminal = os.dup(fd), os.dup(fd)
    os.dup2(write_end, fd)
    os.close(write_end)
    copier = threading.Thread(target=_copy, args=(read_end, path, terminal), daemon=True, name="compute-log-mirror")
    copier.start()
    try:
        yield
    finally:
        try:
            stream.flush()
        finally:
            os.dup2(original, fd)  # the pipe's last writer here is gone: the copier reads to its end
            os.close(original)
            # A child process that inherited the pipe keeps it open; its later output still
            # reaches the file, but the step does not wait for it.
            copier.join(timeout=5)


def _copy(read_end: int, path: str, terminal: int) -> None:
    try:
        with open(path, "ab", buffering=0) as log:
            while chunk := os.read(read_end, 65536):
                log.write(chunk)
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(terminal, view):]
                except OSError:  # the terminal went away: keep the file complete
                    pass
    finally:
        os.close(read_end)
        os.close(terminal)
