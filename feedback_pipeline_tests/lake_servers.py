"""The servers a DuckLake warehouse needs, started on this machine for the tests and the
benchmark: PostgreSQL from the `pgserver` wheel (the catalog, on a unix socket) and moto's
S3-compatible server on loopback (the Parquet data).

    with lake_servers(tmp) as lake:
        os.environ.update(lake.env)   # FEEDBACK_PIPELINE_WAREHOUSE, ..._DATA_PATH, AWS_*
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlparse

BUCKET = "feedback-lake"
# moto accepts any key; these only prove the key travels through a DuckDB secret.
S3_KEY, S3_SECRET = "test-key-id", "test-secret-never-logged"


@dataclass
class Lake:
    pgdata: Path
    server: object  # pgserver.PostgresServer
    s3_endpoint: str
    moto: subprocess.Popen
    database: str
    env: dict[str, str] = field(default_factory=dict)

    def stop_catalog(self) -> None:
        self.server.cleanup()

    def start_catalog(self) -> None:
        """PostgreSQL again on the same data folder (its socket may move: `env` follows)."""
        import pgserver

        self.server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.env["FEEDBACK_PIPELINE_WAREHOUSE"] = f"ducklake:postgres:{conninfo(self.server, self.database)}"

    def fresh(self, name: str) -> dict[str, str]:
        """The environment of a new, empty lake on the same servers (its own database and prefix)."""
        self.server.psql(f"CREATE DATABASE {name};")
        return self.env_of(name)

    def env_of(self, name: str) -> dict[str, str]:
        """The environment of the lake in database `name` (after a restart: the socket may move)."""
        env = {**self.env, "FEEDBACK_PIPELINE_WAREHOUSE": f"ducklake:postgres:{conninfo(self.server, name)}"}
        if self.moto is not None:
            env["FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH"] = f"s3://{BUCKET}/{name}/"
        else:
            env["FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH"] = str(self.pgdata.parent / name) + "/"
        return env

    def s3_objects(self, prefix: str = "") -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=S3_KEY,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not listen within 30 s")


def conninfo(server, database: str) -> str:
    """libpq key=value conninfo for `database` on pgserver's unix socket."""
    uri = urlparse(server.get_uri())
    host = parse_qs(uri.query)["host"][0]
    return f"dbname={database} user={uri.username} host={host}"


@contextmanager
def lake_servers(root: Path, s3: bool = True) -> Iterator[Lake]:
    """PostgreSQL (+ moto S3 when `s3`) for one DuckLake; `lake.env` points the pipeline at it."""
    import boto3
    import pgserver

    root.mkdir(parents=True, exist_ok=True)
    pgdata = root / "pgdata"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    database = f"lake_{uuid.uuid4().hex[:8]}"
    server.psql(f"CREATE DATABASE {database};")
    port = free_port() if s3 else 0
    moto = start_moto(port) if s3 else None
    endpoint = f"http://127.0.0.1:{port}"
    lake = Lake(pgdata=pgdata, server=server, s3_endpoint=endpoint, moto=moto, database=database)
    lake.env = {"FEEDBACK_PIPELINE_WAREHOUSE": f"ducklake:postgres:{conninfo(server, database)}"}
    if s3:
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        lake.env.update({"FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH": f"s3://{BUCKET}/warehouse/",
                         "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                         "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    else:
        lake.env["FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH"] = str(root / "lake_data") + "/"
    try:
        yield lake
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)
        lake.server.cleanup()
