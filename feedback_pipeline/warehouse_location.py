"""Where the warehouse lives, and how a DuckDB connection to it is opened.

One setting, `FEEDBACK_PIPELINE_WAREHOUSE`, chooses:

- unset or empty: the DuckDB file `warehouse.duckdb` in the home folder (one writing
  process at a time);
- `ducklake:postgres:<libpq conninfo>`: a DuckLake whose catalog is a PostgreSQL
  database (several writers on several machines, snapshot isolation);
- `ducklake:<path>.ducklake` (a DuckDB file catalog) or `ducklake:sqlite:<path>`
  (SQLite): a DuckLake on one machine.

A DuckLake keeps its data as Parquet under `FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH` (a
folder, or `s3://bucket/prefix/` with credentials and endpoint from the usual `AWS_*`
variables, handed to DuckDB as a secret). The lake is attached as catalog `warehouse`
and made the default, so every stage's SQL is the same on both.

DuckDB extensions come from their PyPI packages (`duckdb-extension-*`, one per DuckDB
release), loaded from site-packages: nothing is downloaded at run time.

Not here: what is written and how (`warehouse.py`), the home folder (`resources.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import duckdb

SETTING = "FEEDBACK_PIPELINE_WAREHOUSE"
DATA_PATH_SETTING = "FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH"
CATALOG = "warehouse"  # the name the lake is attached under (a DuckDB file's own name is the same)
# A lake's connection may still auto-load DuckDB's built-in extensions, never fetch one.
_NO_DOWNLOADS = {"autoinstall_known_extensions": False}
_PACKAGES = {"ducklake": "duckdb_extension_ducklake", "postgres_scanner": "duckdb_extension_postgres_scanner",
             "httpfs": "duckdb_extension_httpfs"}


class WarehouseUnavailable(RuntimeError):
    """The warehouse could not be opened; the message names the place, never a secret."""


@dataclass(frozen=True)
class WarehouseLocation:
    """A parsed `FEEDBACK_PIPELINE_WAREHOUSE`: a DuckDB file, or a DuckLake catalog + data path."""

    file: Path | None = None         # the DuckDB file, when not a lake
    catalog: str | None = None       # what follows `ducklake:` (e.g. `postgres:dbname=lake host=...`)
    data_path: str | None = None     # Parquet folder or s3:// prefix

    @property
    def is_lake(self) -> bool:
        return self.catalog is not None

    @property
    def multi_writer(self) -> bool:
        """Several processes may write at once (a DuckLake with a database-server catalog)."""
        return self.is_lake and self.catalog.startswith("postgres:")

    def describe(self) -> str:
        """For logs and messages: where the warehouse is, with any password masked."""
        if not self.is_lake:
            return str(self.file)
        return f"ducklake:{mask_secrets(self.catalog)} (data: {self.data_path})"


def mask_secrets(text: str) -> str:
    """`password=...` in a conninfo or `user:pw@` in a URL, masked."""
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def location_from_env(home: Path) -> WarehouseLocation:
    """The warehouse the environment names, for the home folder `home`."""
    setting = os.environ.get(SETTING, "").strip()
    if not setting:
        return WarehouseLocation(file=home / "warehouse.duckdb")
    if not setting.startswith("ducklake:") or setting == "ducklake:":
        raise WarehouseUnavailable(
            f"{SETTING}={mask_secrets(setting)!r}: expected empty (the DuckDB file in the home folder), "
            "'ducklake:postgres:<conninfo>', 'ducklake:<path>.ducklake' or 'ducklake:sqlite:<path>'")
    catalog = setting.removeprefix("ducklake:")
    data_path = os.environ.get(DATA_PATH_SETTING, "").strip() or str(home / "warehouse_data") + "/"
    return WarehouseLocation(catalog=catalog, data_path=data_path)


def pools_are_split() -> bool:
    """Whether weekly writers get a pool of their own (read when the code location loads,
    like the partitions' start date): only a multi-writer lake lets weeks write at once."""
    return os.environ.get(SETTING, "").strip().startswith("ducklake:postgres:")


def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file of `name` shipped by its PyPI package for this DuckDB."""
    package = _PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseUnavailable(f"the DuckDB extension {name!r} is not installed: pip install "
                                   f"{package.replace('_', '-')}=={duckdb.__version__} (make install does)")
    path = Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}" / \
        f"{name}.duckdb_extension"
    if not path.exists():
        raise WarehouseUnavailable(f"{package} has no build for DuckDB {duckdb.__version__} ({path} missing): "
                                   "install the extension package of the same version as duckdb")
    return path


# One attached lake per process and location, handed out as cursors (each its own
# connection and transaction): loading the extensions and attaching the catalog costs
# ~0.3 s, which every step and check would otherwise pay on each open.
_ATTACHED: dict[tuple, duckdb.DuckDBPyConnection] = {}


def connect(location: WarehouseLocation, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection whose default catalog is the warehouse. A DuckDB file's lock error is
    raised as DuckDB's own (the caller waits on it); a lake that cannot be reached raises
    `WarehouseUnavailable` naming it, without its secrets."""
    if not location.is_lake:
        con = _held_cursor(location.file) or duckdb.connect(str(location.file), read_only=read_only)
        con.execute("SET TimeZone='UTC'")
        return con
    secret = s3_secret_sql()  # part of the key (credentials may rotate), hashed: keys are not secrets
    place = (location.catalog, location.data_path, secret and hashlib.sha256(secret.encode()).hexdigest())
    con = _cursor_if_alive((*place, read_only))
    if con is None and read_only:  # reading through this process's writing attachment is fine
        con = _cursor_if_alive((*place, False))
    if con is None:
        if not location.multi_writer:  # a local catalog file can be attached once per process
            forget((*place, not read_only))
        lake = duckdb.connect(config=dict(_NO_DOWNLOADS))
        try:
            _attach_lake(lake, location, read_only)
        except BaseException:
            lake.close()
            raise
        _ATTACHED[(*place, read_only)] = lake
        con = lake.cursor()
        con.execute(f"USE {CATALOG}")
    con.execute("SET TimeZone='UTC'")
    return con


# DuckDB files this process holds open (`hold_open`), opened at their first use within it.
_HOLDING: dict[Path, duckdb.DuckDBPyConnection | None] = {}
_HOLDING_LOCK = threading.Lock()


@contextmanager
def hold_open(location: WarehouseLocation) -> Iterator[None]:
    """Within the block, every connection to the warehouse's DuckDB file is a cursor on one
    database instance this process keeps open: ~0 ms instead of ~15 ms to open the file and
    up to ~10 ms to checkpoint it on each close (a demo plays ~1,000 opens). Read-only
    opens get a cursor of the same (writable) instance. For a process that owns the file
    meanwhile: the in-process daemon loop (`runs.AutomationTicker`), whose runs are all in
    it. Never around a run in a deployment: runs in other processes would wait for the
    file's lock. A lake is kept attached per process anyway (`_ATTACHED`): a no-op there."""
    if location.is_lake:
        yield
        return
    with _HOLDING_LOCK:
        if location.file in _HOLDING:
            raise RuntimeError(f"{location.file} is held open already")
        _HOLDING[location.file] = None
    try:
        yield
    finally:
        with _HOLDING_LOCK:
            held = _HOLDING.pop(location.file)
        if held is not None:
            held.close()  # the checkpoint, once


def _held_cursor(file: Path) -> duckdb.DuckDBPyConnection | None:
    """A cursor on `file`'s held instance (opened now if this is its first use), or None."""
    with _HOLDING_LOCK:
        if file not in _HOLDING:
            return None
        if _HOLDING[file] is None:
            _HOLDING[file] = duckdb.connect(str(file))  # a lock error goes to the caller, who waits
        return _HOLDING[file].cursor()


def _cursor_if_alive(key: tuple) -> duckdb.DuckDBPyConnection | None:
    """A cursor on the lake attached under `key`, if any and if its catalog still answers
    (it may have restarted since): a cheap query, instead of the ~0.3 s attach."""
    lake = _ATTACHED.get(key)
    if lake is None:
        return None
    try:
        con = lake.cursor()
        con.execute(f"USE {CATALOG}")
        con.execute(f"SELECT max(snapshot_id) FROM ducklake_snapshots('{CATALOG}')").fetchall()
        return con
    except duckdb.Error:
        # Dropped from the cache, not closed: another thread may be mid-transaction on a
        # cursor of it (a reader shares the writer's attachment), and closing it under that
        # writer fails its step. The next open attaches anew; the old one is closed when
        # its last cursor goes.
        _ATTACHED.pop(key, None)
        return None


def forget(key: tuple | None = None) -> None:
    """Close the attached lake(s) kept for this process (all when `key` is None)."""
    for k in [key] if key is not None else list(_ATTACHED):
        lake = _ATTACHED.pop(k, None)
        if lake is not None:
            try:
                lake.close()
            except duckdb.Error:
                pass


def _attach_lake(con: duckdb.DuckDBPyConnection, location: WarehouseLocation, read_only: bool) -> None:
    con.execute(f"LOAD '{extension_file('ducklake')}'")
    if location.catalog.startswith("postgres:"):
        con.execute(f"LOAD '{extension_file('postgres_scanner')}'")
    if location.data_path.startswith("s3://"):
        con.execute(f"LOAD '{extension_file('httpfs')}'")
        s3 = s3_secret_sql()
        if s3:
            try:
                con.execute(s3)
            except duckdb.Error:  # DuckDB's message could quote the statement, which holds the key
                raise WarehouseUnavailable("could not make a DuckDB S3 secret from the AWS_* variables "
                                           "(values not shown)") from None
    options = ["READ_ONLY"] if read_only else [f"DATA_PATH {sql_string(location.data_path)}"]
    try:
        con.execute(f"ATTACH {sql_string('ducklake:' + location.catalog)} AS {CATALOG} ({', '.join(options)})")
    except duckdb.Error as exc:
        raise WarehouseUnavailable(
            f"cannot open the DuckLake warehouse {location.describe()}: {mask_secrets(str(exc))}") from None
    # Commits that race retry inside DuckLake first; what it cannot merge reaches
    # `warehouse.write_attempts`, which re-runs the whole transaction.
    con.execute("SET GLOBAL ducklake_max_retry_count = 20")


def s3_secret_sql() -> str | None:
    """CREATE SECRET for S3 from the standard AWS_* variables (None when no key is set:
    DuckDB's own credential chain then applies). The SQL holds the key: never log it."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    parts = {"KEY_ID": key, "SECRET": secret,
             "REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if os.environ.get("AWS_SESSION_TOKEN"):
        parts["SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:  # an S3-compatible server (MinIO, moto, Ceph): host:port, path-style URLs
        url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        parts.update({"ENDPOINT": url.netloc, "URL_STYLE": "path", "USE_SSL": url.scheme == "https"})
    body = ", ".join(f"{k} {v if isinstance(v, bool) else sql_string(v)}" for k, v in parts.items())
    return f"CREATE OR REPLACE SECRET feedback_pipeline_s3 (TYPE s3, {body})"


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
