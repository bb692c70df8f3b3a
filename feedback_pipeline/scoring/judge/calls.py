"""Calling the judge endpoint: one request per trace, bounded concurrency, a failure as a reason.

The request body, the call through the openai client's `post`, one retry on an invalid
answer, the status-to-reason mapping, and the batches whose verdicts are cached as each
ends. `openai` (~0.6 s to import) is imported inside the functions that call it. Reading
an answer is `answers.py`'s; which traces are called for is `selection.py`'s.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from feedback_pipeline.rubrics import Rubric
from feedback_pipeline.scoring.judge.answers import completion_fields, parse_answer
from feedback_pipeline.scoring.judge.resource import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, JudgeResource

if TYPE_CHECKING:
    import openai

    from feedback_pipeline.scoring.judge.cache import JudgeCache

log = logging.getLogger(__package__)

# `chat.completions.create` walks its TypedDict annotations over every message of every
# call and builds a pydantic model of the answer: ~0.7 ms of client CPU a call, a third of
# a call to a local endpoint. The body is plain JSON already and we read two fields, so it
# goes through the same client's `post` (openai's documented way to send a raw body): same
# auth, retries (Retry-After), timeouts and error types. Only the bearer key, as `create`.
_CHAT_OPTIONS: dict[str, Any] = {"security": {"bearer_auth": True}}


@dataclass
class Outcome:
    """One trace's result: a checked verdict or an error, and what the calls cost."""

    verdict: str | None = None
    failure_category: str | None = None
    rationale: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class CallRun:
    """What every call of one run shares: the client, the prompt and the structured-output switch."""

    client: openai.AsyncOpenAI
    resource: JudgeResource
    rubric: Rubric
    system: str
    semaphore: asyncio.Semaphore
    use_schema: bool

    def body(self, user: str, with_schema: bool) -> dict[str, Any]:
        """The chat-completion request body, as `chat.completions.create` would send it."""
        body: dict[str, Any] = {
            "model": self.resource.model,
            "messages": [{"role": "system", "content": self.system}, {"role": "user", "content": user}],
        }
        if with_schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "judge_verdict", "strict": True, "schema": self.rubric.output_schema}}
        body["temperature"] = self.resource.temperature
        return body


def _status_reason(err: openai.APIStatusError, resource: JudgeResource) -> str:
    """Why a call failed, from the status alone: response bodies may echo the key."""
    hints = {
        400: "request rejected", 401: f"authentication failed (check {ENV_API_KEY})",
        403: "permission denied", 404: f"model or endpoint not found (check {ENV_MODEL}, {ENV_BASE_URL})",
        429: "rate limited",
    }
    hint = hints.get(err.status_code, "server error" if err.status_code >= 500 else "client error")
    retryable = err.status_code == 429 or err.status_code >= 500
    return f"HTTP {err.status_code}: {hint}" + (f" (max_retries={resource.max_retries})" if retryable else "")


async def _timed(run: CallRun, body: dict[str, Any], outcome: Outcome) -> str | None:
    start = time.perf_counter()
    try:
        text = await run.client.post("/chat/completions", body=body, cast_to=str, options=_CHAT_OPTIONS)
    finally:
        outcome.latencies_ms.append((time.perf_counter() - start) * 1000)
    content, prompt_tokens, completion_tokens = completion_fields(text)
    outcome.prompt_tokens += prompt_tokens
    outcome.completion_tokens += completion_tokens
    return content


async def _create(run: CallRun, user: str, outcome: Outcome) -> str | None:
    """The answer's message content (None if there is none)."""
    import openai

    if run.use_schema:
        try:
            return await _timed(run, run.body(user, with_schema=True), outcome)
        except openai.BadRequestError:
            content = await _timed(run, run.body(user, with_schema=False), outcome)
            if run.use_schema:
                log.warning("judge endpoint rejected response_format; using plain JSON instructions")
            run.use_schema = False  # only once the plain request succeeded
            return content
    return await _timed(run, run.body(user, with_schema=False), outcome)


async def _judge_one(run: CallRun, user: str) -> Outcome:
    """One trace's verdict; a bad answer is asked again once; never raises."""
    import openai

    outcome = Outcome()
    async with run.semaphore:
        why = None
        for _ in range(2):
            try:
                content = await _create(run, user, outcome)
            except openai.APITimeoutError:
                outcome.error = (f"timeout: no answer within {run.resource.timeout_s:g} s"
                                 f" (max_retries={run.resource.max_retries})")
                return outcome
            except openai.APIStatusError as err:
                outcome.error = _status_reason(err, run.resource)
                return outcome
            except openai.APIConnectionError:
                outcome.error = ("connection error: judge endpoint unreachable"
                                 f" (max_retries={run.resource.max_retries})")
                return outcome
            except Exception as err:  # noqa: BLE001 - one trace must not sink the partition
                outcome.error = f"unexpected {type(err).__name__}"
                return outcome
            answer, why = parse_answer(content, run.rubric.categories)
            if answer is not None:
                outcome.verdict = answer["verdict"]
                outcome.failure_category = answer["failure_category"]
                outcome.rationale = answer["rationale"]
                return outcome
        outcome.error = f"invalid answer twice: {why}"
        return outcome


def outcome_frame(batch: pl.DataFrame, outcomes: list[Outcome], rubric: Rubric,
                  resource: JudgeResource) -> pl.DataFrame:
    """One row per call of `batch` (cache_key, judge_prompt_hash), shaped as a cache row plus `error`."""
    return pl.DataFrame({
        "cache_key": batch["cache_key"],
        "verdict": pl.Series([o.verdict for o in outcomes], dtype=pl.String),
        "failure_category": pl.Series([o.failure_category for o in outcomes], dtype=pl.String),
        "rationale": pl.Series([o.rationale for o in outcomes], dtype=pl.String),
        "error": pl.Series([o.error for o in outcomes], dtype=pl.String),
        "prompt_tokens": pl.Series([o.prompt_tokens for o in outcomes], dtype=pl.Int64),
        "completion_tokens": pl.Series([o.completion_tokens for o in outcomes], dtype=pl.Int64),
    }).with_columns(
        rubric_id=pl.lit(rubric.id), rubric_version=pl.lit(rubric.version),
        rubric_hash=pl.lit(rubric.content_hash), model=pl.lit(resource.model),
        prompt_hash=batch["judge_prompt_hash"],
    )


async def judge_misses(run: CallRun, misses: pl.DataFrame, cache: JudgeCache | None,
                       batch_size: int) -> tuple[list[pl.DataFrame], list[float]]:
    """Calls for each row of `misses`, one client for all; each batch's verdicts are cached as it ends."""
    results, latencies = [], []
    async with run.client:
        for start in range(0, misses.height, batch_size):
            batch = misses.slice(start, batch_size)
            outcomes = await asyncio.gather(*(_judge_one(run, u) for u in batch["user_prompt"]))
            result = outcome_frame(batch, outcomes, run.rubric, run.resource)
            if cache is not None:
                cache.put_many(result.drop("error"))
            results.append(result)
            for o in outcomes:
                latencies.extend(o.latencies_ms)
    return results, latencies


@contextmanager
def fewer_gc_passes(young_threshold: int = 50_000) -> Iterator[None]:
    """Collect young objects less often while the calls run.

    Each call leaves thousands of short-lived objects of the openai/httpx stack; at the
    default threshold (700) the collector's passes, which also sweep the host process's
    older objects (a Dagster run holds ~300k), took ~15-20 % of the client's CPU.
    """
    before = gc.get_threshold()
    gc.set_threshold(max(young_threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
