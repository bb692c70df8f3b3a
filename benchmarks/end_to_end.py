"""End to end: (a) the full 8-week demo from an empty home; (b) one 1M-trace week
through ingest + deterministic scoring + the annotation queue (no judge).

Prints wall time and peak RSS of each (each in its own child process).

    .venv/bin/python benchmarks/end_to_end.py [--skip-demo] [--traces 1000000]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WEEK = "2026-11-16"


def _child(args: list[str], env: dict | None = None) -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def one_week(home: str) -> None:
    """Child: materialize ingest + scoring + queue for one week, no judge."""
    import dagster as dg

    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
    from feedback_pipeline.impact.replay import AgentReplayResource
    from feedback_pipeline.resources import FeedbackHome
    from feedback_pipeline.scoring.judge import JudgeResource

    result = dg.materialize(
        ASSETS + ASSET_CHECKS, partition_key=WEEK,
        selection=dg.AssetSelection.groups("ingest", "scoring", "sampling"),
        resources={"home": FeedbackHome(path=home), "judge": JudgeResource(), "agent": AgentReplayResource()},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.all_events
             if e.event_type_value == "STEP_SUCCESS"}
    print("  step seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--one-week", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_week:
        return one_week(args.one_week)
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    try:
        if not args.skip_demo:
            home = work / "demo"
            elapsed, rss = _child(["-m", "feedback_pipeline.cli", "demo"],
                                  env={"FEEDBACK_PIPELINE_HOME": str(home)})
            print(f"full 8-week demo from an empty home: {elapsed:.0f} s (peak RSS of children {rss:,.0f} MiB)")
        home = work / "big"
        here = Path(__file__).parent
        subprocess.run([sys.executable, str(here / "ingest.py"), "--write-only", str(home / "landing"),
                        "--traces", str(args.traces)], check=True)
        elapsed, rss = _child([__file__, "--one-week", str(home)])
        print(f"{args.traces:,}-trace week through ingest + deterministic scoring + queue: "
              f"{elapsed:.1f} s, peak RSS {rss:,.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
