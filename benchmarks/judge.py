"""LLM-judge throughput against the fake endpoint adding 100 ms per call.

Prints judged traces/s at the default concurrency with p50/p95 call latency, then
the same for a re-run served from the cache. The endpoint runs in its own process,
as a real one would; a second figure shares the process (and the GIL) with the
client, as the tests do. Floor: 150 judged traces/s.

    .venv/bin/python benchmarks/judge.py [--traces 3000]
"""

import argparse
import subprocess
import sys
import time

import duckdb
import polars as pl

from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource, judge_traces
from feedback_pipeline.scoring.rubric import load_rubric

FLOOR_PER_S = 150.0
LATENCY_MS = 100


def synthetic_traces(n: int) -> pl.DataFrame:
    i = pl.col("i")
    return pl.DataFrame({"i": pl.int_range(n, eager=True)}).select(**{
        "trace_id": pl.format("bench-{}", i),
        "user_message": pl.format(
            "Hi, I ordered a blender last week (order {}) and it still has not arrived. "
            "My email is someone{}@example.com. Can you check where it is?", i, i),
        "agent_response": pl.format(
            "Thanks for waiting. Order {} left our warehouse yesterday and should arrive "
            "within two working days. You will get a tracking link by email.", i),
        "escalated": (i % 20 == 0),
        "thumbs": pl.when(i % 9 == 0).then(pl.lit("down")).otherwise(pl.lit(None, pl.String)),
    })


def run(label: str, frame: pl.DataFrame, judge: JudgeResource, cache: JudgeCache) -> float:
    rubric = load_rubric("agent_quality")
    start = time.perf_counter()
    out, stats = judge_traces(frame, rubric, judge, cache)
    elapsed = time.perf_counter() - start
    rate = frame.height / elapsed
    p50, p95 = stats["latency_p50_ms"], stats["latency_p95_ms"]
    latency = f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms" if p50 is not None else "no calls"
    print(f"{label:<34} {frame.height:>6} traces  {elapsed:6.2f} s  {rate:8.0f} traces/s  "
          f"calls {stats['calls_made']:>5}  cached {stats['cached']:>5}  failed {stats['failed']:>3}  "
          f"{latency}")
    assert out["judge_verdict"].null_count() == stats["failed"]
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=3000)
    args = parser.parse_args()
    frame = synthetic_traces(args.traces)
    concurrency = JudgeResource().concurrency
    print(f"fake endpoint latency {LATENCY_MS} ms, default concurrency {concurrency}, "
          f"ideal {concurrency / (LATENCY_MS / 1000):.0f} traces/s")

    proc = subprocess.Popen(
        [sys.executable, "-m", "feedback_pipeline.demo.fake_openai", "--port", "0",
         "--latency-ms", str(LATENCY_MS)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = proc.stdout.readline().split(" at ")[1].split()[0]
        judge = JudgeResource(base_url=url, model="fake-judge-1", api_key="bench-key")
        cache = JudgeCache(duckdb.connect())
        rate = run("endpoint in its own process", frame, judge, cache)
        run("  re-run (cache hits)", frame, judge, cache)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    with FakeOpenAIServer(latency_s=LATENCY_MS / 1000) as server:
        judge = JudgeResource(base_url=server.url, model="fake-judge-1", api_key="bench-key")
        cache = JudgeCache(duckdb.connect())
        run("endpoint in the client's process", frame, judge, cache)
        run("  re-run (cache hits)", frame, judge, cache)

    verdict = "OK" if rate >= FLOOR_PER_S else "BELOW FLOOR"
    print(f"floor {FLOOR_PER_S:.0f} judged traces/s: {verdict} ({rate:.0f}/s)")
    sys.exit(0 if rate >= FLOOR_PER_S else 1)


if __name__ == "__main__":
    main()
