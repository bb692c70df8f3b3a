"""LLM-judge throughput against the fake endpoint adding 100 ms per call.

Prints judged traces/s at the default concurrency with p50/p95 call latency, then
the same for a re-run served from the cache. The endpoint runs in its own process,
as a real one would; a second figure shares the process (and the GIL) with the
client, as the tests do. Floor: 150 judged traces/s.

A last figure is `make demo`'s case: an endpoint that answers at once, where the
client's CPU per call (the openai/httpx stack) is the limit, not the latency.
"process CPU" is this process's (with the endpoint in it, the endpoint's too).

    .venv/bin/python benchmarks/judge.py [--traces 3000] [--demo-calls 2000]
"""

import argparse
import subprocess
import sys
import time

import duckdb
import polars as pl

from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource, judge_traces
from feedback_pipeline.rubrics import load_rubric

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


def run(label: str, frame: pl.DataFrame, judge: JudgeResource, cache: JudgeCache | None) -> float:
    rubric = load_rubric("agent_quality")
    start, cpu = time.perf_counter(), time.process_time()
    out, stats = judge_traces(frame, rubric, judge, cache)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    rate = frame.height / elapsed
    p50, p95 = stats["latency_p50_ms"], stats["latency_p95_ms"]
    latency = f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms" if p50 is not None else "no calls"
    per_call = f"  process CPU {1000 * cpu / stats['calls_made']:.2f} ms/call" if stats["calls_made"] else ""
    print(f"{label:<34} {frame.height:>6} traces  {elapsed:6.2f} s  {rate:8.0f} traces/s  "
          f"calls {stats['calls_made']:>5}  cached {stats['cached']:>5}  failed {stats['failed']:>3}  "
          f"{latency}{per_call}")
    assert out["judge_verdict"].null_count() == stats["failed"]
    return rate


def own_process_endpoint(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedback_pipeline.demo.fake_openai", "--port", "0",
         "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, text=True,
    )
    return proc, proc.stdout.readline().split(" at ")[1].split()[0]


def main() -> None:
    # The judge imports openai (~0.6 s) on its first call; import it up front so the first
    # figure measures calls, as the others do, not the import.
    import openai  # noqa: F401

    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--demo-calls", type=int, default=2000)
    args = parser.parse_args()
    frame = synthetic_traces(args.traces)
    concurrency = JudgeResource().concurrency
    print(f"fake endpoint latency {LATENCY_MS} ms, default concurrency {concurrency}, "
          f"ideal {concurrency / (LATENCY_MS / 1000):.0f} traces/s")

    proc, url = own_process_endpoint(LATENCY_MS)
    try:
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

    proc, url = own_process_endpoint(0)
    try:
        judge = JudgeResource(base_url=url, model="fake-judge-1", api_key="bench-key")
        run("no latency (make demo's case)", synthetic_traces(args.demo_calls), judge, None)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    verdict = "OK" if rate >= FLOOR_PER_S else "BELOW FLOOR"
    print(f"floor {FLOOR_PER_S:.0f} judged traces/s: {verdict} ({rate:.0f}/s)")
    sys.exit(0 if rate >= FLOOR_PER_S else 1)


if __name__ == "__main__":
    main()
