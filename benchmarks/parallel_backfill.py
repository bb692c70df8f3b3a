"""Wall time of a backfill of the demo world's weeks: the DuckDB file (one writer) against
a DuckLake (PostgreSQL catalog from pgserver; Parquet in a local folder, then on moto's S3
server on loopback) with 1, 2 and 4 writers. Each configuration starts from the same landing files on a fresh
home and Dagster instance and runs, as a user would:

    feedback-pipeline run --week <first> --to <last> --writers N

Prints one line per configuration (wall seconds, rows in raw_traces).

    .venv/bin/python benchmarks/parallel_backfill.py [--weeks 8] [--turns-per-week 20000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world  # noqa: E402
from feedback_pipeline_tests.lake_servers import lake_servers  # noqa: E402

LAKE_ENV = ("FEEDBACK_PIPELINE_WAREHOUSE", "FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH")


def backfill(world: Path, root: Path, name: str, weeks: list[str], writers: int, env: dict[str, str]) -> None:
    home = shutil.copytree(world, root / name)
    dagster_home = root / f"{name}_dagster"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    run_env = {k: v for k, v in os.environ.items() if k not in LAKE_ENV}
    run_env.update({**env, "FEEDBACK_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
                    "PYTHONWARNINGS": "ignore"})
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "feedback-pipeline"), "run", "--week", weeks[0],
                    "--to", weeks[-1], "--writers", str(writers)],
                   check=True, env=run_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    count = subprocess.run([sys.executable, "-c", "from feedback_pipeline.resources import FeedbackHome\n"
                            "with FeedbackHome().warehouse(read_only=True) as con:\n"
                            "    print(con.execute('SELECT count(*) FROM raw_traces').fetchone()[0])"],
                           env=run_env, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    print(f"{name:<22} writers={writers}  {seconds:7.1f} s  raw_traces={int(count):,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--turns-per-week", type=int, default=20_000)
    args = parser.parse_args()
    weeks = [(DEMO_FIRST_WEEK + timedelta(days=7 * i)).isoformat() for i in range(args.weeks)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_world(root / "world", seed=7, weeks=args.weeks, turns_per_week=args.turns_per_week)
        print(f"{args.weeks}-week backfill, {args.turns_per_week:,} turns/week, {os.cpu_count()} cores")
        backfill(root / "world", root, "duckdb file", weeks, 1, {})
        with lake_servers(root / "servers") as lake:
            for writers in (1, 2, 4):
                folder = {**lake.fresh(f"folder_{writers}"),
                          "FEEDBACK_PIPELINE_WAREHOUSE_DATA_PATH": str(root / f"lake_data_{writers}") + "/"}
                backfill(root / "world", root, f"ducklake_pg_folder_{writers}", weeks, writers, folder)
            for writers in (1, 2, 4):
                backfill(root / "world", root, f"ducklake_pg_s3_{writers}", weeks, writers,
                         lake.fresh(f"s3_{writers}"))


if __name__ == "__main__":
    main()
