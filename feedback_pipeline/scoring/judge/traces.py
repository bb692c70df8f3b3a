"""`judge_traces`: a frame of traces in; the judge's columns, one row per trace, and run stats out.

Orchestration only: select and prepare the rows, serve what the cache holds, call for the
rest, assemble the `JUDGE` columns. One trace's failure never raises: it becomes that
row's `judge_error`. Nothing here touches Dagster context; the asset lives in `assets.py`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from feedback_pipeline.rubrics import Rubric
from feedback_pipeline.scoring.columns import JUDGE_SCHEMA
from feedback_pipeline.scoring.judge.cache import JudgeCache
from feedback_pipeline.scoring.judge.calls import CallRun, fewer_gc_passes, judge_misses, outcome_frame
from feedback_pipeline.scoring.judge.prompts import system_prompt
from feedback_pipeline.scoring.judge.resource import JudgeResource
from feedback_pipeline.scoring.judge.selection import prepare_rows

INPUT_COLUMNS = ("trace_id", "user_message", "agent_response", "escalated", "thumbs")


def empty_judge_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """trace_id plus all-null judge columns: the judge is not configured."""
    return frame.select("trace_id", *(pl.lit(None, dtype).alias(c) for c, dtype in JUDGE_SCHEMA.items()))


async def judge_traces_async(
    frame: pl.DataFrame,
    rubric: Rubric,
    resource: JudgeResource,
    cache: JudgeCache | None = None,
    *,
    batch_size: int = 4096,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """trace_id + JUDGE columns, one row per input row in input order, and run stats.

    `frame` needs trace_id, user_message, agent_response, escalated, thumbs and may
    have conversation_context. Verdicts come from the cache when the same prompt
    was judged before with the same rubric file, model and params; new successful
    verdicts are written to the cache after each batch.
    """
    stats: dict[str, Any] = {
        "judge_configured": resource.is_configured, "traces": frame.height, "selected": 0,
        "calls_made": 0, "cached": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0,
        "estimated_cost_usd": 0.0, "latency_p50_ms": None, "latency_p95_ms": None,
        "call_budget": None, "structured_output": None,
    }
    missing = set(INPUT_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"judge_traces input lacks columns {sorted(missing)}")
    if not resource.is_configured:
        return empty_judge_columns(frame), stats

    rows, budget = prepare_rows(frame, rubric, resource)
    todo = rows.filter("judge_selected")
    hits = cache.get_many(todo["cache_key"]) if cache is not None else JudgeCache.empty()
    misses = todo.join(hits.select("cache_key"), on="cache_key", how="anti").unique(
        "cache_key", keep="first", maintain_order=True)

    results, latencies, use_schema = [], [], resource.structured_output
    if misses.height:  # building a client costs ~50 ms (TLS context): not for a run served from the cache
        run = CallRun(resource.make_client(), resource, rubric, system_prompt(rubric),
                      asyncio.Semaphore(resource.concurrency), resource.structured_output)
        with fewer_gc_passes():
            results, latencies = await judge_misses(run, misses, cache, batch_size)
        use_schema = run.use_schema

    fresh = pl.concat(results) if results else outcome_frame(misses.clear(), [], rubric, resource)
    out = _assemble(rows, hits, fresh, rubric, resource)
    stats.update(
        selected=todo.height,
        calls_made=len(latencies),
        cached=todo.join(hits.select("cache_key"), on="cache_key", how="semi").height,
        failed=out["judge_error"].is_not_null().sum(),
        prompt_tokens=int(fresh["prompt_tokens"].sum()),
        completion_tokens=int(fresh["completion_tokens"].sum()),
        call_budget=budget,
        structured_output=use_schema,
        **_latency_percentiles(latencies),
    )
    stats["estimated_cost_usd"] = resource.cost_usd(stats["prompt_tokens"], stats["completion_tokens"])
    return out, stats


def judge_traces(
    frame: pl.DataFrame,
    rubric: Rubric,
    resource: JudgeResource,
    cache: JudgeCache | None = None,
    **kwargs: Any,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Synchronous `judge_traces_async`."""
    return run_sync(judge_traces_async(frame, rubric, resource, cache, **kwargs))


def run_sync(coro):
    """Run a coroutine to completion: its own event loop, in a thread if one is running
    (Dagster may call assets from inside a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _latency_percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"latency_p50_ms": None, "latency_p95_ms": None}
    import numpy as np

    return {"latency_p50_ms": float(np.percentile(latencies, 50)),
            "latency_p95_ms": float(np.percentile(latencies, 95))}


def _assemble(rows: pl.DataFrame, hits: pl.DataFrame, fresh: pl.DataFrame, rubric: Rubric,
              resource: JudgeResource) -> pl.DataFrame:
    """The JUDGE columns for every row: cached and fresh answers joined on cache_key; null where not selected."""
    answer_cols = ["cache_key", "verdict", "failure_category", "rationale"]
    answers = pl.concat([
        hits.select(answer_cols).with_columns(error=pl.lit(None, pl.String), cached=pl.lit(True)),
        fresh.select(*answer_cols, "error").with_columns(cached=pl.lit(False)),
    ]).unique("cache_key", keep="first")
    joined = rows.join(answers, on="cache_key", how="left", maintain_order="left")
    on = pl.col("judge_selected")
    return joined.select(
        "trace_id",
        judge_verdict=pl.when(on).then("verdict"),
        judge_failure_category=pl.when(on).then("failure_category"),
        judge_rationale=pl.when(on).then("rationale"),
        judge_error=pl.when(on).then("error"),
        judge_selection_prob=pl.col("judge_selection_prob").cast(pl.Float64),
        judge_rubric_id=pl.when(on).then(pl.lit(rubric.id)),
        judge_rubric_version=pl.when(on).then(pl.lit(rubric.version)),
        judge_rubric_hash=pl.when(on).then(pl.lit(rubric.content_hash)),
        judge_model=pl.when(on).then(pl.lit(resource.model)),
        judge_prompt_hash=pl.when(on).then("judge_prompt_hash"),
        judge_cached=pl.when(on).then("cached"),
    )
