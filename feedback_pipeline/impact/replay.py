"""Paired eval replay: the same held-out cases answered by two agent versions, judged alike.

Pure and async functions plus `AgentReplayResource` (where the agent under test answers,
any OpenAI-compatible endpoint, one model name per version) and `ReplayCache` (a warehouse
table of past answers). No Dagster context here: the asset loads the latest snapshot, calls
`replay_cases` and `paired_summary`, and writes what they return.

Per case (the `test` split, and every canary case whatever its split) and version, the agent
gets the case's context turns as user/assistant messages and then its user message. Both
answers are judged by `scoring.judge.judge_traces` with the same rubric, judge resource and
`judge_cache` table as the scoring stage (trace_id "<case_id>:<version>"; judge budgets are
lifted, since a pair missing a verdict is lost). A call that fails becomes that row's error.

Cache key of an answer: sha256 of (the exact messages sent, the model name, `agent_params`),
so a changed case text, system prompt, model or sampling setting is a miss, while a moved
endpoint serving the same model names is not.
"""

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import dagster as dg
import duckdb
import openai
import polars as pl

from feedback_pipeline.impact.stats import paired_pass_rate
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource, judge_traces, run_sync
from feedback_pipeline.rubrics import Rubric

ENV_BASE_URL = "FEEDBACK_PIPELINE_AGENT_BASE_URL"
ENV_API_KEY = "FEEDBACK_PIPELINE_AGENT_API_KEY"
MESSAGES_VERSION = "replay-messages-v1"  # bump when `build_messages` changes
SIDES = ("before", "after")
_PER_SIDE = {"version": pl.String, "model": pl.String, "answer": pl.String, "verdict": pl.String,
             "failure_category": pl.String, "error": pl.String, "agent_cached": pl.Boolean,
             "judge_cached": pl.Boolean}
REPLAY_SCHEMA: dict[str, pl.DataType] = {
    "agent_id": pl.String, "snapshot_id": pl.String, "case_id": pl.String, "split": pl.String,
    "canary": pl.Boolean, "gold_verdict": pl.String,
    **{f"{side}_{k}": v for side in SIDES for k, v in _PER_SIDE.items()},
}


class AgentReplayResource(dg.ConfigurableResource):
    """The agent under test behind an OpenAI-compatible endpoint; `models` maps version -> model name."""

    base_url: Optional[str] = None
    api_key: Optional[str] = None
    models: dict[str, str] = {}  # a version missing here is sent as its own model name
    system_prompt: Optional[str] = None
    temperature: float = 0.0
    max_tokens: Optional[int] = None
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3

    @classmethod
    def from_env(cls, **overrides: Any) -> "AgentReplayResource":
        """`dg.EnvVar` for each agent variable that is set (as `JudgeResource.from_env`)."""
        names = {"base_url": ENV_BASE_URL, "api_key": ENV_API_KEY}
        env = {f: dg.EnvVar(name) for f, name in names.items() if os.environ.get(name)}
        return cls(**{**env, **overrides})

    @property
    def is_configured(self) -> bool:
        return bool(self.base_url or self.api_key)

    def model_for(self, version: str) -> str:
        return self.models.get(version, version)

    def agent_params(self) -> dict[str, Any]:
        """The call settings that change an answer: part of the cache key."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "messages": MESSAGES_VERSION}

    def make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url or None, api_key=self.api_key or "no-key",
                                  timeout=self.timeout_s, max_retries=self.max_retries)

    def __repr_args__(self):  # keep the key out of reprs and logs
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)


class ReplayCache:
    """Agent answers in the warehouse table `replay_cache`, keyed by `cache_key`; its connection
    also holds the judge's `judge_cache`."""

    TABLE = "replay_cache"
    COLUMNS = ("cache_key", "case_id", "model", "answer", "prompt_tokens", "completion_tokens")

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.execute(f"""
            CREATE TABLE IF NOT EXISTS {self.TABLE} (
                cache_key VARCHAR PRIMARY KEY, case_id VARCHAR NOT NULL, model VARCHAR NOT NULL,
                answer VARCHAR NOT NULL, prompt_tokens BIGINT, completion_tokens BIGINT,
                created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT current_timestamp)""")

    def get_many(self, keys: Sequence[str] | pl.Series) -> pl.DataFrame:
        wanted = pl.DataFrame({"cache_key": pl.Series(list(keys), dtype=pl.String)}).unique()
        self.con.register("_replay_wanted", wanted)
        try:
            return self.con.sql(f"SELECT {', '.join(self.COLUMNS)} FROM {self.TABLE} "
                                "WHERE cache_key IN (SELECT cache_key FROM _replay_wanted)").pl()
        finally:
            self.con.unregister("_replay_wanted")

    def put_many(self, frame: pl.DataFrame) -> None:
        new = frame.filter(pl.col("answer").is_not_null()).unique("cache_key").select(self.COLUMNS)
        if new.is_empty():
            return
        self.con.register("_replay_new", new)
        try:
            cols = ", ".join(self.COLUMNS)
            self.con.execute(f"INSERT INTO {self.TABLE} ({cols}) SELECT {cols} FROM _replay_new ON CONFLICT DO NOTHING")
        finally:
            self.con.unregister("_replay_new")


# -- which cases, which messages --------------------------------------------------------------

def select_cases(cases: pl.DataFrame) -> pl.DataFrame:
    """The held-out cases to replay: each agent's latest snapshot (by `week` if given), split
    `test` plus every canary case."""
    if "week" in cases.columns and "agent_id" in cases.columns:
        cases = cases.filter(pl.col("week") == pl.col("week").max().over("agent_id"))
    return cases.filter((pl.col("split") == "test") | pl.col("canary").fill_null(False))


def build_messages(context: list[dict] | None, user_message: str, system_prompt: str | None) -> list[dict]:
    """Chat messages: optional system prompt, the context turns in order, the case's user message."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in sorted(context or [], key=lambda t: t.get("turn_index") or 0):
        messages += [{"role": role, "content": turn[key]} for role, key in
                     (("user", "user_message"), ("assistant", "agent_response")) if turn.get(key)]
    return messages + [{"role": "user", "content": user_message}]


def _context_text(context: list[dict] | None) -> str:
    """The judge's `conversation_context`, in the scoring stage's "User: …\\nAgent: …" layout."""
    return "\n".join(f"User: {t.get('user_message') or ''}\nAgent: {t.get('agent_response') or ''}"
                     for t in sorted(context or [], key=lambda t: t.get("turn_index") or 0))


def _requests(cases: pl.DataFrame, versions: Sequence[str], agent: AgentReplayResource) -> pl.DataFrame:
    """One row per case and side: the messages to send and their cache key."""
    params = json.dumps(agent.agent_params(), sort_keys=True)
    contexts = cases["context"].to_list() if "context" in cases.columns else [None] * cases.height
    rows = []
    for side, version in zip(SIDES, versions):
        model = agent.model_for(version)
        for case_id, user, context in zip(cases["case_id"], cases["user_message"], contexts):
            messages = build_messages(context, user, agent.system_prompt)
            body = json.dumps({"messages": messages, "model": model, "params": params}, sort_keys=True)
            rows.append({"case_id": case_id, "side": side, "version": version, "model": model,
                         "messages": json.dumps(messages), "context_text": _context_text(context),
                         "user_message": user, "cache_key": hashlib.sha256(body.encode()).hexdigest()})
    return pl.DataFrame(rows, schema={"case_id": pl.String, "side": pl.String, "version": pl.String,
                                      "model": pl.String, "messages": pl.String, "context_text": pl.String,
                                      "user_message": pl.String, "cache_key": pl.String})


# -- agent calls ---------------------------------------------------------------------------------

@dataclass
class _Answer:
    answer: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def _ask(client: openai.AsyncOpenAI, sem: asyncio.Semaphore, agent: AgentReplayResource,
               model: str, messages: list[dict]) -> _Answer:
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": agent.temperature}
    if agent.max_tokens is not None:
        kwargs["max_tokens"] = agent.max_tokens
    async with sem:
        try:
            completion = await client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            return _Answer(error=f"timeout: no answer within {agent.timeout_s:g} s")
        except openai.APIStatusError as err:  # the status only: bodies may echo the key
            return _Answer(error=f"HTTP {err.status_code} from the agent endpoint (model {model})")
        except openai.APIConnectionError:
            return _Answer(error=f"connection error: agent endpoint unreachable (check {ENV_BASE_URL})")
        except Exception as err:  # noqa: BLE001 - one case must not sink the replay
            return _Answer(error=f"unexpected {type(err).__name__}")
    content = completion.choices[0].message.content if completion.choices else None
    if not content or not content.strip():
        return _Answer(error="empty answer")
    usage = completion.usage
    return _Answer(content, None, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)


async def _ask_all(todo: pl.DataFrame, agent: AgentReplayResource) -> list[_Answer]:
    sem = asyncio.Semaphore(agent.concurrency)
    async with agent.make_client() as client:
        return await asyncio.gather(*(_ask(client, sem, agent, m, json.loads(msgs))
                                      for m, msgs in zip(todo["model"], todo["messages"])))





def _answers(requests: pl.DataFrame, agent: AgentReplayResource, cache: ReplayCache | None) -> pl.DataFrame:
    """requests + answer, agent_error, agent_cached."""
    hits = cache.get_many(requests["cache_key"]) if cache is not None else pl.DataFrame(
        schema={"cache_key": pl.String, "answer": pl.String})
    todo = requests.join(hits.select("cache_key"), on="cache_key", how="anti").unique("cache_key", maintain_order=True)
    if not agent.is_configured:
        fresh = todo.select("cache_key", answer=pl.lit(None, pl.String),
                            agent_error=pl.lit(f"agent endpoint not configured (set {ENV_BASE_URL})"))
    else:
        got = run_sync(_ask_all(todo, agent)) if todo.height else []
        fresh = todo.select("cache_key", "case_id", "model").with_columns(
            answer=pl.Series([a.answer for a in got], dtype=pl.String),
            agent_error=pl.Series([a.error for a in got], dtype=pl.String),
            prompt_tokens=pl.Series([a.prompt_tokens for a in got], dtype=pl.Int64),
            completion_tokens=pl.Series([a.completion_tokens for a in got], dtype=pl.Int64))
        if cache is not None:
            cache.put_many(fresh)
    answers = pl.concat([
        hits.select("cache_key", "answer", agent_error=pl.lit(None, pl.String), agent_cached=pl.lit(True)),
        fresh.select("cache_key", "answer", "agent_error", agent_cached=pl.lit(False)),
    ])
    return requests.join(answers, on="cache_key", how="left", maintain_order="left")


# -- the replay ---------------------------------------------------------------------------------

_SIDE_COLUMNS = (("version", "version"), ("model", "model"), ("answer", "answer"), ("judge_verdict", "verdict"),
                 ("judge_failure_category", "failure_category"), ("error", "error"),
                 ("agent_cached", "agent_cached"), ("judge_cached", "judge_cached"))


def _judged(rows: pl.DataFrame, judge: JudgeResource, rubric: Rubric, cache: ReplayCache | None) -> pl.DataFrame:
    """rows + the judge's verdict on each answer, and `error` (the agent's, else the judge's)."""
    trace_id = pl.format("{}:{}", "case_id", "version")
    to_judge = rows.filter(pl.col("answer").is_not_null()).select(
        trace_id=trace_id, user_message="user_message", agent_response="answer", escalated=pl.lit(False),
        thumbs=pl.lit(None, pl.String), conversation_context="context_text")
    unlimited = judge.model_copy(update={"max_judge_calls_per_week": None, "max_cost_usd": None})
    verdicts, _ = judge_traces(to_judge, rubric, unlimited, JudgeCache(cache.con) if cache is not None else None)
    unjudged = pl.col("answer").is_not_null() & pl.col("judge_verdict").is_null()
    return rows.with_columns(trace_id=trace_id).join(
        verdicts.select("trace_id", "judge_verdict", "judge_failure_category", "judge_error", "judge_cached"),
        on="trace_id", how="left", maintain_order="left",
    ).with_columns(error=pl.coalesce("agent_error", "judge_error",
                                     pl.when(unjudged).then(pl.lit("no verdict: judge not configured"))))


def replay_cases(cases: pl.DataFrame, versions: tuple[str, str], agent: AgentReplayResource,
                 judge: JudgeResource, rubric: Rubric, cache: ReplayCache | None = None) -> pl.DataFrame:
    """One row per replayed case (REPLAY_SCHEMA): both versions' answers and verdicts.

    cases: `eval_set_snapshots` rows with case_id, split, canary, user_message and optionally
    context, verdict (kept as gold_verdict), agent_id, snapshot_id, week. versions: (before, after).
    """
    if len(versions) != 2:
        raise ValueError("versions must be (before_version, after_version)")
    missing = {"case_id", "split", "canary", "user_message"} - set(cases.columns)
    if missing:
        raise ValueError(f"cases lack columns {sorted(missing)}")
    chosen = select_cases(cases)
    if chosen["case_id"].is_duplicated().any():
        raise ValueError("case_id must be unique among the replayed cases (one snapshot per agent)")
    rows = _judged(_answers(_requests(chosen, versions, agent), agent, cache), judge, rubric, cache)
    wide = [rows.filter(pl.col("side") == side).select(
        "case_id", *[pl.col(src).alias(f"{side}_{dst}") for src, dst in _SIDE_COLUMNS]) for side in SIDES]
    base = chosen.select("case_id", *[c for c in ("agent_id", "snapshot_id", "split", "canary") if c in chosen.columns],
                         *([pl.col("verdict").alias("gold_verdict")] if "verdict" in chosen.columns else []))
    out = base
    for part in wide:
        out = out.join(part, on="case_id", how="left", maintain_order="left")
    return out.select([(pl.col(c) if c in out.columns else pl.lit(None)).cast(t).alias(c)
                       for c, t in REPLAY_SCHEMA.items()])


def paired_summary(replayed: pl.DataFrame) -> dict[str, Any]:
    """McNemar + paired CI (`stats.paired_pass_rate`) over all cases with both verdicts, and over
    the canary alone; a subset without complete pairs gives None."""
    complete = replayed.filter(pl.col("before_verdict").is_not_null() & pl.col("after_verdict").is_not_null())

    def test(frame: pl.DataFrame) -> dict | None:
        if frame.is_empty():
            return None
        return paired_pass_rate((frame["before_verdict"] == "pass").to_numpy(),
                                (frame["after_verdict"] == "pass").to_numpy())

    versions = [replayed[f"{s}_version"].drop_nulls().unique().to_list() for s in SIDES]
    cached = replayed.select(pl.sum_horizontal(pl.col("before_agent_cached", "after_agent_cached")
                                               .cast(pl.Int64)).sum()).item() if replayed.height else 0
    return {
        "before_version": versions[0][0] if versions[0] else None,
        "after_version": versions[1][0] if versions[1] else None,
        "n_cases": replayed.height, "n_complete": complete.height,
        "n_incomplete": replayed.height - complete.height,
        "n_canary": int(replayed["canary"].fill_null(False).sum()),
        "agent_answers_cached": int(cached or 0),
        "overall": test(complete),
        "canary": test(complete.filter(pl.col("canary").fill_null(False))),
        "errors": sorted({*replayed["before_error"].drop_nulls(), *replayed["after_error"].drop_nulls()}),
    }
