"""`hold_open`: the in-process daemon loop keeps the warehouse's DuckDB file open between
uses. Inside it every connection (also a read-only one) is a cursor of one database
instance; the file stays locked against other processes until the block ends, and then
holds everything written; a lock held elsewhere makes the first use wait, as before."""

import subprocess
import sys
import time

import pytest
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse_location import hold_open

OPEN_ELSEWHERE = """
import sys, time, duckdb
try:
    con = duckdb.connect(sys.argv[1])
except duckdb.IOException as exc:
    print("LOCKED" if "lock" in str(exc).lower() else f"ERROR {exc}")
    sys.exit(0)
print("OPEN", con.execute("SELECT count(*) FROM t").fetchone()[0] if len(sys.argv) < 3 else "", flush=True)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def _elsewhere(path, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", OPEN_ELSEWHERE, str(path), *args], capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()


def test_connections_in_a_hold_share_one_instance_and_the_file_is_whole_after(tmp_path):
    home = FeedbackHome(path=str(tmp_path))
    with hold_open(home.warehouse_location):
        assert not home.warehouse_path.exists()  # opened at its first use, not before
        with home.warehouse() as con:
            con.execute("CREATE TABLE t AS SELECT range AS i FROM range(1000)")
        assert _elsewhere(home.warehouse_path) == "LOCKED"  # held between uses
        with home.warehouse(read_only=True) as reader, home.warehouse() as writer:
            writer.execute("INSERT INTO t VALUES (1000)")
            assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 1001
        with pytest.raises(RuntimeError, match="held open already"):
            with hold_open(home.warehouse_location):
                pass
    assert _elsewhere(home.warehouse_path) == "OPEN 1001"  # released, and nothing lost
    with home.warehouse(read_only=True) as con:  # outside a hold: DuckDB's own read-only open
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1001


def test_a_file_held_by_another_process_is_waited_for(tmp_path):
    home = FeedbackHome(path=str(tmp_path), lock_timeout_s=60)
    with home.warehouse() as con:
        con.execute("CREATE TABLE t (i INTEGER)")
    holder = subprocess.Popen([sys.executable, "-c", OPEN_ELSEWHERE, str(home.warehouse_path), "3"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().startswith("OPEN")
        started = time.monotonic()
        with hold_open(home.warehouse_location), home.warehouse() as con:
            con.execute("INSERT INTO t VALUES (1)")
        assert time.monotonic() - started > 1.0  # it waited for the other process to let go
    finally:
        holder.wait(timeout=60)
    assert _elsewhere(home.warehouse_path) == "OPEN 1"
