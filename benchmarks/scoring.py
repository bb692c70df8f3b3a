"""Deterministic scorers throughput: N traces through `score_deterministic`.

Prints traces/s (floor in the issue: >= 200k traces/s on 2 cores).

    .venv/bin/python benchmarks/scoring.py [--traces 1000000]
"""

import argparse
import time

import polars as pl

from feedback_pipeline.demo.world import generate_turns
from feedback_pipeline.scoring.week import score_deterministic


def as_raw_traces(turns: pl.DataFrame) -> pl.DataFrame:
    """Contract-shaped turns flattened as raw_traces has them."""
    return turns.with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC"),
        pl.lit(None, pl.Date).alias("week"),
        pl.col("feedback").struct.field("thumbs").alias("thumbs"),
        pl.col("feedback").struct.field("escalated").alias("escalated"),
        pl.col("feedback").struct.field("escalation_reason").alias("escalation_reason"),
        pl.col("feedback").struct.field("user_rewrote").alias("user_rewrote"),
    ).drop("feedback")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    traces = as_raw_traces(generate_turns(args.traces, seed=2)[0])
    best = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        scored = score_deterministic(traces)
        best = min(best, time.perf_counter() - started)
    print(f"traces: {scored.height:,}; columns: {scored.width}")
    print(f"deterministic scorers: best of {args.repeats}: {best:.2f} s = {scored.height / best:,.0f} traces/s")
    print(f"refusal rate {scored['is_refusal'].mean():.3f}, disclaimer rate {scored['has_disclaimer'].mean():.3f}, "
          f"mean response chars {scored['response_chars'].mean():.0f}")


if __name__ == "__main__":
    main()
