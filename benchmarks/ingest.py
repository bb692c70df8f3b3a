"""Ingest throughput: N contract-format traces (JSONL + gzip) through the real
`raw_traces` materialization (in-process Dagster run, DuckDB file warehouse).

Prints traces/s and the peak RSS of the process. Floor (issue): >= 250k traces/s and
< 2 GiB peak RSS for 1M traces on 2 cores.

    .venv/bin/python benchmarks/ingest.py [--traces 1000000] [--files 8]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl

from feedback_pipeline.demo.world import generate_turns
from feedback_pipeline.ingest import assets as ingest_assets
from feedback_pipeline.resources import FeedbackHome

WEEK = date(2026, 11, 16)


def write_landing(landing: Path, n: int, files: int) -> float:
    turns, _ = generate_turns(n, seed=1, first_week=WEEK, weeks=1)
    landing.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i, part in enumerate(turns.iter_slices(n_rows=-(-n // files))):
        suffix = ".jsonl.gz" if i % 2 else ".jsonl"
        part.write_ndjson(landing / f"part-{i:03d}{suffix}", compression="gzip" if i % 2 else "uncompressed") \
            if _ndjson_supports_compression() else _write(part, landing / f"part-{i:03d}{suffix}")
    return time.perf_counter() - started


def _ndjson_supports_compression() -> bool:
    import inspect

    return "compression" in inspect.signature(pl.DataFrame.write_ndjson).parameters


def _write(frame: pl.DataFrame, path: Path) -> None:
    import gzip

    data = frame.write_ndjson().encode()
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if path.suffix == ".gz" else data)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--write-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        write_landing(Path(args.write_only), args.traces, args.files)
        return
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        home = FeedbackHome(path=str(work))
        # Generate in a child process so this process's peak RSS is the run's alone.
        subprocess.run([sys.executable, __file__, "--write-only", str(home.landing),
                        "--traces", str(args.traces), "--files", str(args.files)], check=True)
        size = sum(p.stat().st_size for p in home.landing.iterdir())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu_before = _cpu_s()
        started = time.perf_counter()
        # Only the ingest stage and its Pandera checks: no other stage's resources are needed.
        result = dg.materialize(
            [ingest_assets.ingest, ingest_assets.raw_traces_schema_check,
             ingest_assets.ingest_quarantine_schema_check],
            partition_key=WEEK.isoformat(),
            resources={"home": home},
        )
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
        steps = {e.step_key: e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        asset_s = steps["ingest"].event_specific_data.duration_ms / 1000 if "ingest" in steps else float("nan")
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with home.warehouse() as con:
            loaded = con.execute("SELECT count(*) FROM raw_traces").fetchone()[0]
        print(f"traces: {args.traces:,} in {args.files} files ({size / 2**20:.0f} MiB, half gzip)")
        print(f"loaded: {loaded:,}")
        print(f"ingest asset (parse + validate + write): {asset_s:.2f} s = {loaded / asset_s:,.0f} traces/s")
        print(f"whole run incl. Pandera checks and Dagster overhead: {elapsed:.2f} s = {loaded / elapsed:,.0f} traces/s")
        print(f"CPU time of the whole run: {cpu:.2f} s on {os.cpu_count()} cores "
              "(wall time above varies with other load on the machine; CPU time much less)")
        print(f"peak RSS of the run's process: {peak_rss:,.0f} MiB (before the run: {rss_before:,.0f} MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
