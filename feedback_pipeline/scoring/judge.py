"""The LLM judge: which traces to judge, redacted prompts, cached async calls, checked verdicts.

Pure and async functions plus `JudgeResource` (where and how to call any
OpenAI-compatible endpoint) and `JudgeCache` (a warehouse table of past verdicts).
The `automated_scores` asset wraps `judge_traces`; nothing here touches Dagster
context, and one trace's failure never raises: it becomes that row's `judge_error`.
"""

import asyncio
import gc
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

import dagster as dg
import duckdb
import numpy as np
import openai
import polars as pl

from feedback_pipeline.scoring.columns import JUDGE
from feedback_pipeline.redact import redact_columns
from feedback_pipeline.rubrics import Rubric

log = logging.getLogger(__name__)

ENV_BASE_URL = "FEEDBACK_PIPELINE_JUDGE_BASE_URL"
ENV_MODEL = "FEEDBACK_PIPELINE_JUDGE_MODEL"
ENV_API_KEY = "OPENAI_API_KEY"

PROMPT_TEMPLATE_VERSION = "judge-prompt-v1"  # bump when the prompt layout below changes
INPUT_COLUMNS = ("trace_id", "user_message", "agent_response", "escalated", "thumbs")
CONTEXT_COLUMN = "conversation_context"  # optional input column
EXPECTED_COMPLETION_TOKENS = 60  # for the pre-call cost estimate only
MAX_RATIONALE_CHARS = 2000

JUDGE_SCHEMA: dict[str, pl.DataType] = {
    "judge_verdict": pl.String, "judge_failure_category": pl.String,
    "judge_rationale": pl.String, "judge_error": pl.String,
    "judge_selection_prob": pl.Float64, "judge_rubric_id": pl.String,
    "judge_rubric_version": pl.String, "judge_rubric_hash": pl.String,
    "judge_model": pl.String, "judge_prompt_hash": pl.String, "judge_cached": pl.Boolean,
}
assert tuple(JUDGE_SCHEMA) == JUDGE

SYSTEM_SUFFIX = (
    "\n\n---\nThe user turn starts with a `Reference:` line that only identifies the "
    "record; it is not part of the conversation and must not affect the verdict. "
    "Reply with the JSON object only."
)


class JudgeResource(dg.ConfigurableResource):
    """Where and how to call the LLM judge; without a model and an endpoint it judges nothing."""

    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key: Optional[str] = None
    concurrency: int = 32
    timeout_s: float = 30.0
    max_retries: int = 3  # HTTP retries by the openai client (429 honours Retry-After, 5xx, timeouts)
    redact_pii: bool = True
    temperature: float = 0.0
    structured_output: bool = True  # ask for a strict JSON schema; falls back on a 400
    input_usd_per_1m_tokens: float = 0.0
    output_usd_per_1m_tokens: float = 0.0
    max_judge_calls_per_week: Optional[int] = None  # None: judge every trace
    max_cost_usd: Optional[float] = None
    selection_seed: int = 0

    @classmethod
    def from_env(cls, **overrides: Any) -> "JudgeResource":
        """`dg.EnvVar` for each judge variable that is set; unset ones stay None.

        Dagster fails a run's whole config when a `dg.EnvVar` names an unset
        variable, even on an Optional field, so unset variables must not be passed.
        """
        names = {"base_url": ENV_BASE_URL, "model": ENV_MODEL, "api_key": ENV_API_KEY}
        env = {f: dg.EnvVar(name) for f, name in names.items() if os.environ.get(name)}
        return cls(**{**env, **overrides})

    @property
    def is_configured(self) -> bool:
        return bool(self.model) and bool(self.base_url or self.api_key)

    def make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url or None,
            # Self-hosted endpoints often need no key; the client insists on one.
            api_key=self.api_key or "no-key",
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            # openai's own aiohttp transport (the `openai[aiohttp]` extra): about a third
            # of httpx's client CPU per call, which is what bounds judge throughput on
            # 2 cores. Same retries, timeouts and errors (they live above the transport).
            http_client=openai.DefaultAioHttpClient(timeout=self.timeout_s),
        )

    def judge_params(self) -> dict[str, Any]:
        """The call settings that change an answer: part of the cache key."""
        return {"temperature": self.temperature, "template": PROMPT_TEMPLATE_VERSION}

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_usd_per_1m_tokens
                + completion_tokens * self.output_usd_per_1m_tokens) / 1e6

    def __repr_args__(self):  # keep the key out of reprs and logs
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)


# -- which traces are judged ---------------------------------------------------
def select_for_judging(frame: pl.DataFrame, max_calls: int | None, seed: int = 0) -> pl.DataFrame:
    """`frame` plus `judge_selected` and `judge_selection_prob` (the inclusion probability).

    Escalated and thumbs-down traces are always judged (probability 1). The rest
    are a simple random sample without replacement of what the budget leaves, so
    each has probability k / N_rest. The sample depends only on the seed and the
    set of trace_ids, not on row order.
    """
    forced = pl.col("escalated").fill_null(False) | (pl.col("thumbs") == "down").fill_null(False)
    indexed = frame.with_row_index("_row").with_columns(forced.alias("_forced"))
    if max_calls is None:
        chosen = indexed.get_column("_row")
        prob_rest = 1.0
    else:
        rest = indexed.filter(~pl.col("_forced")).sort("trace_id", "_row").get_column("_row")
        n_forced = indexed.height - rest.len()
        k = min(rest.len(), max(0, max_calls - n_forced))
        picks = np.random.default_rng(seed).choice(rest.len(), size=k, replace=False)
        chosen = rest.gather(np.sort(picks))
        prob_rest = k / rest.len() if rest.len() else 1.0
    return indexed.with_columns(
        judge_selected=pl.col("_forced") | pl.col("_row").is_in(chosen.implode()),
        judge_selection_prob=pl.when(pl.col("_forced")).then(1.0).otherwise(prob_rest),
    ).drop("_row", "_forced")


def call_budget(resource: JudgeResource, system: str, prompts: pl.DataFrame | None) -> int | None:
    """The most calls the resource's budgets allow (cost estimated at ~4 chars a token); None: unlimited.

    `prompts` (all of them) is needed only for a cost budget.
    """
    budgets = [resource.max_judge_calls_per_week]
    if resource.max_cost_usd is not None and prompts is not None and prompts.height:
        user_chars = prompts.select(pl.col("user_prompt").str.len_chars().mean()).item()
        per_call = resource.cost_usd((len(system) + user_chars) / 4, EXPECTED_COMPLETION_TOKENS)
        if per_call > 0:
            budgets.append(int(resource.max_cost_usd // per_call))
    limits = [b for b in budgets if b is not None]
    return min(limits) if limits else None


# -- prompts -------------------------------------------------------------------
def system_prompt(rubric: Rubric) -> str:
    """The same for every trace: the rubric's instructions."""
    return rubric.instructions + SYSTEM_SUFFIX


def build_prompts(frame: pl.DataFrame, redact: bool) -> pl.DataFrame:
    """trace_id, user_prompt: the (redacted) turn, led by its `Reference:` line."""
    texts = ["user_message", "agent_response"] + ([CONTEXT_COLUMN] if CONTEXT_COLUMN in frame.columns else [])
    turns = frame.select("trace_id", *texts)
    if redact:
        turns = redact_columns(turns, texts)
    context = pl.col(CONTEXT_COLUMN) if CONTEXT_COLUMN in texts else pl.lit(None, pl.String)
    return turns.select(
        "trace_id",
        user_prompt=pl.format(
            "Reference: {}\n\nConversation so far:\n{}\n\nUser message:\n{}\n\nAgent response:\n{}",
            pl.col("trace_id"),
            context.fill_null("(none)"),
            pl.col("user_message").fill_null("(empty)"),
            pl.col("agent_response").fill_null("(empty)"),
        ),
    )


def add_hashes(prompts: pl.DataFrame, rubric: Rubric, resource: JudgeResource) -> pl.DataFrame:
    """Adds judge_prompt_hash (sha256 of the exact messages) and cache_key.

    cache_key = sha256(prompt hash | rubric file hash | model | judge params): the
    prompt holds the redacted input and the rubric text, so any change to either,
    to the model or to the params is a cache miss.
    """
    params = json.dumps(resource.judge_params(), sort_keys=True)
    con = duckdb.connect()
    try:
        con.register("prompts", prompts.with_row_index("_row"))
        return con.sql(
            "SELECT * EXCLUDE (_row), sha256(judge_prompt_hash || '|' || $suffix) AS cache_key"
            " FROM (SELECT *, sha256($system || chr(0) || user_prompt) AS judge_prompt_hash"
            "       FROM prompts) ORDER BY _row",
            params={"system": system_prompt(rubric),
                    "suffix": "|".join([rubric.content_hash, resource.model or "", params])},
        ).pl()
    finally:
        con.close()


def prepare_rows(frame: pl.DataFrame, rubric: Rubric, resource: JudgeResource) -> tuple[pl.DataFrame, int | None]:
    """One row per input row, in input order: trace_id, judge_selected, judge_selection_prob and,
    for the selected rows, user_prompt, judge_prompt_hash and cache_key; plus the call budget.

    Redacting and hashing are the costly steps, so only the selected rows get a prompt
    unless a cost budget needs the length of all of them.
    """
    flags = frame.select("trace_id", "escalated", "thumbs")
    if resource.max_cost_usd is None:
        budget = call_budget(resource, system_prompt(rubric), None)
        selected = select_for_judging(flags, budget, resource.selection_seed)
        prompts = build_prompts(frame.filter(selected["judge_selected"]), resource.redact_pii)
    else:
        prompts = build_prompts(frame, resource.redact_pii)
        budget = call_budget(resource, system_prompt(rubric), prompts)
        selected = select_for_judging(flags, budget, resource.selection_seed)
        prompts = prompts.filter(selected["judge_selected"])
    hashed = add_hashes(prompts, rubric, resource).drop("trace_id")
    indexed = selected.drop("escalated", "thumbs").with_row_index("_row")
    hashed = hashed.with_columns(_row=indexed.filter("judge_selected")["_row"])
    rows = indexed.join(hashed, on="_row", how="left", maintain_order="left").drop("_row")
    return rows, budget


# -- the cache -----------------------------------------------------------------
class JudgeCache:
    """Successful verdicts in the warehouse table `judge_cache`, keyed by `cache_key`.

    Either on an open connection `con`, or with `connect` (e.g. `FeedbackHome.warehouse`),
    which opens one for each read or write and closes it right after: the warehouse is then
    free for other writers while the judge calls run.
    """

    TABLE = "judge_cache"
    COLUMNS = ("cache_key", "verdict", "failure_category", "rationale", "rubric_id",
               "rubric_version", "rubric_hash", "model", "prompt_hash",
               "prompt_tokens", "completion_tokens")
    DDL = f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            cache_key VARCHAR PRIMARY KEY,
            verdict VARCHAR NOT NULL,
            failure_category VARCHAR,
            rationale VARCHAR,
            rubric_id VARCHAR NOT NULL,
            rubric_version VARCHAR NOT NULL,
            rubric_hash VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            prompt_hash VARCHAR NOT NULL,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT current_timestamp
        )"""

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None, *,
                 connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]] | None = None) -> None:
        if (con is None) == (connect is None):
            raise ValueError("JudgeCache needs exactly one of con and connect")
        self.con = con
        self._connect = connect
        with self._connection() as con:
            con.execute(self.DDL)

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.con is not None:
            yield self.con
        else:
            with self._connect() as con:
                yield con

    def get_many(self, keys: Sequence[str] | pl.Series) -> pl.DataFrame:
        """Cached rows (COLUMNS) for those of `keys` that are present."""
        wanted = pl.DataFrame({"cache_key": pl.Series(list(keys), dtype=pl.String)}).unique()
        if wanted.is_empty():
            return self.empty()
        with self._connection() as con:
            con.register("_judge_cache_wanted", wanted)
            try:
                return con.sql(
                    f"SELECT {', '.join(self.COLUMNS)} FROM {self.TABLE}"
                    " WHERE cache_key IN (SELECT cache_key FROM _judge_cache_wanted)"
                ).pl()
            finally:
                con.unregister("_judge_cache_wanted")

    def put_many(self, frame: pl.DataFrame) -> int:
        """Insert the rows of `frame` (COLUMNS) that hold a verdict; keys already cached are kept."""
        new = frame.filter(pl.col("verdict").is_not_null()).unique("cache_key").select(self.COLUMNS)
        if new.is_empty():
            return 0
        cols = ", ".join(self.COLUMNS)
        with self._connection() as con:
            con.register("_judge_cache_new", new)
            try:
                before = con.sql(f"SELECT count(*) FROM {self.TABLE}").fetchone()[0]
                con.execute(
                    f"INSERT INTO {self.TABLE} ({cols}) SELECT {cols} FROM _judge_cache_new"
                    " ON CONFLICT DO NOTHING")
                return con.sql(f"SELECT count(*) FROM {self.TABLE}").fetchone()[0] - before
            finally:
                con.unregister("_judge_cache_new")

    @classmethod
    def empty(cls) -> pl.DataFrame:
        """A frame shaped like `get_many`'s answer, with no rows."""
        ints = {"prompt_tokens", "completion_tokens"}
        return pl.DataFrame(schema={c: pl.Int64 if c in ints else pl.String for c in cls.COLUMNS})


# -- one call ------------------------------------------------------------------
@dataclass
class _Outcome:
    verdict: str | None = None
    failure_category: str | None = None
    rationale: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class _Run:
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


def parse_answer(content: str | None, categories: Sequence[str]) -> tuple[dict | None, str | None]:
    """(answer, None) for a valid judge answer, else (None, why it is invalid)."""
    text = (content or "").strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    elif "{" in text:
        text = text[text.find("{"): text.rfind("}") + 1]
    try:
        obj = json.loads(text)
    except ValueError:
        return None, f"not JSON: {(content or '')[:60]!r}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    verdict = str(obj.get("verdict", "")).strip().lower()
    category = obj.get("failure_category")
    if isinstance(category, str) and category.strip().lower() in ("", "none", "null"):
        category = None
    rationale = obj.get("rationale")
    if verdict not in ("pass", "fail"):
        return None, f"verdict {str(obj.get('verdict'))[:40]!r} is not pass/fail"
    if verdict == "fail" and category not in categories:
        return None, f"failure_category {str(category)[:40]!r} is not a rubric category"
    if verdict == "pass" and category is not None:
        return None, "a pass must have failure_category null"
    if not isinstance(rationale, str):
        return None, "rationale missing"
    return {"verdict": verdict, "failure_category": category,
            "rationale": rationale[:MAX_RATIONALE_CHARS]}, None


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


async def _create(run: _Run, user: str, outcome: _Outcome) -> str | None:
    """The answer's message content (None if there is none)."""
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


# `chat.completions.create` walks its TypedDict annotations over every message of every
# call and builds a pydantic model of the answer: ~0.7 ms of client CPU a call, a third of
# a call to a local endpoint. The body is plain JSON already and we read two fields, so it
# goes through the same client's `post` (openai's documented way to send a raw body): same
# auth, retries (Retry-After), timeouts and error types. Only the bearer key, as `create`.
_CHAT_OPTIONS: dict[str, Any] = {"security": {"bearer_auth": True}}


async def _timed(run: _Run, body: dict[str, Any], outcome: _Outcome) -> str | None:
    start = time.perf_counter()
    try:
        text = await run.client.post("/chat/completions", body=body, cast_to=str, options=_CHAT_OPTIONS)
    finally:
        outcome.latencies_ms.append((time.perf_counter() - start) * 1000)
    content, prompt_tokens, completion_tokens = completion_fields(text)
    outcome.prompt_tokens += prompt_tokens
    outcome.completion_tokens += completion_tokens
    return content


def completion_fields(text: str) -> tuple[str | None, int, int]:
    """(message content, prompt tokens, completion tokens) of a chat completion's JSON;
    (None, 0, 0) for a body that is not one."""
    try:
        completion = json.loads(text)
        content = completion["choices"][0]["message"]["content"]
        usage = completion.get("usage") or {}
        return (content if isinstance(content, str) else None,
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    except (ValueError, LookupError, TypeError, AttributeError):
        return None, 0, 0


async def _judge_one(run: _Run, user: str) -> _Outcome:
    """One trace's verdict; a bad answer is asked again once; never raises."""
    outcome = _Outcome()
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


# -- all traces ----------------------------------------------------------------
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
        run = _Run(resource.make_client(), resource, rubric, system_prompt(rubric),
                   asyncio.Semaphore(resource.concurrency), resource.structured_output)
        with _fewer_gc_passes():
            results, latencies = await _judge_misses(run, misses, cache, batch_size)
        use_schema = run.use_schema

    fresh = pl.concat(results) if results else _outcome_frame(misses.clear(), [], rubric, resource)
    out = _assemble(rows, hits, fresh, rubric, resource)
    stats.update(
        selected=todo.height,
        calls_made=len(latencies),
        cached=todo.join(hits.select("cache_key"), on="cache_key", how="semi").height,
        failed=out["judge_error"].is_not_null().sum(),
        prompt_tokens=int(fresh["prompt_tokens"].sum()),
        completion_tokens=int(fresh["completion_tokens"].sum()),
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else None,
        call_budget=budget,
        structured_output=use_schema,
    )
    stats["estimated_cost_usd"] = resource.cost_usd(stats["prompt_tokens"], stats["completion_tokens"])
    return out, stats


async def _judge_misses(run: _Run, misses: pl.DataFrame, cache: JudgeCache | None,
                        batch_size: int) -> tuple[list[pl.DataFrame], list[float]]:
    """Calls for each row of `misses`, one client for all; each batch's verdicts are cached as it ends."""
    results, latencies = [], []
    async with run.client:
        for start in range(0, misses.height, batch_size):
            batch = misses.slice(start, batch_size)
            outcomes = await asyncio.gather(*(_judge_one(run, u) for u in batch["user_prompt"]))
            result = _outcome_frame(batch, outcomes, run.rubric, run.resource)
            if cache is not None:
                cache.put_many(result.drop("error"))
            results.append(result)
            for o in outcomes:
                latencies.extend(o.latencies_ms)
    return results, latencies


def judge_traces(
    frame: pl.DataFrame,
    rubric: Rubric,
    resource: JudgeResource,
    cache: JudgeCache | None = None,
    **kwargs: Any,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Synchronous `judge_traces_async`."""
    return run_sync(judge_traces_async(frame, rubric, resource, cache, **kwargs))


@contextmanager
def _fewer_gc_passes(young_threshold: int = 50_000) -> Iterator[None]:
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


def run_sync(coro):
    """Run a coroutine to completion: its own event loop, in a thread if one is running
    (Dagster may call assets from inside a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _outcome_frame(batch: pl.DataFrame, outcomes: list[_Outcome], rubric: Rubric,
                   resource: JudgeResource) -> pl.DataFrame:
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


def _assemble(rows: pl.DataFrame, hits: pl.DataFrame, fresh: pl.DataFrame, rubric: Rubric,
              resource: JudgeResource) -> pl.DataFrame:
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
