"""Paired eval replay: the same held-out cases answered by two agent versions, judged alike.

Pure and async functions over Polars frames; no Dagster context here: the `impact_metrics`
asset gets `replayer(con, agent, judge)` and calls it per change. Which cases and messages:
`replay_requests.py`; the agent resource and its calls: `agent.py`; the answer cache:
`replay_cache.py`; the statistic and the `impact_metrics` rows: `paired.py`; the weekly
replay of the live version (`heldout_replay`): `heldout_replay.py`, which reuses `ask_agent`
and `judge_answers`.

Both versions' answers to each case are judged by `scoring.judge.judge_traces` with the same
rubric, judge resource and `judge_cache` table as the scoring stage (trace_id
"<case_id>:<version>"; judge budgets are lifted, since a pair missing a verdict is lost).
A call that fails becomes that row's error.
"""

from collections.abc import Callable
from typing import Any

import duckdb
import polars as pl

from feedback_pipeline.impact.agent import ENV_BASE_URL, AgentReplayResource, ask_all
from feedback_pipeline.impact.paired import paired_pass_rate, replay_metric_rows
from feedback_pipeline.impact.replay_cache import ReplayCache
from feedback_pipeline.impact.replay_requests import SIDES, build_requests, select_cases
from feedback_pipeline.rubrics import RUBRIC_ID, Rubric, load_rubric
from feedback_pipeline.scoring.judge import JudgeCache, JudgeResource, judge_traces, run_sync
from feedback_pipeline.warehouse import table_exists

__all__ = ["AgentReplayResource", "REPLAY_SCHEMA", "ReplayCache", "paired_summary", "replay_cases", "replayer"]

_PER_SIDE = {"version": pl.String, "model": pl.String, "answer": pl.String, "verdict": pl.String,
             "failure_category": pl.String, "error": pl.String, "agent_cached": pl.Boolean,
             "judge_cached": pl.Boolean}
# The shape of `replay_cases`' frame (returned to the caller, not stored as a table).
REPLAY_SCHEMA: dict[str, pl.DataType] = {
    "agent_id": pl.String, "snapshot_id": pl.String, "case_id": pl.String, "split": pl.String,
    "canary": pl.Boolean, "gold_verdict": pl.String,
    **{f"{side}_{k}": v for side in SIDES for k, v in _PER_SIDE.items()},
}
_SIDE_COLUMNS = (("version", "version"), ("model", "model"), ("answer", "answer"), ("judge_verdict", "verdict"),
                 ("judge_failure_category", "failure_category"), ("error", "error"),
                 ("agent_cached", "agent_cached"), ("judge_cached", "judge_cached"))


# -- answers and verdicts ---------------------------------------------------------------------

def ask_agent(requests: pl.DataFrame, agent: AgentReplayResource, cache: ReplayCache | None) -> pl.DataFrame:
    """requests + answer, agent_error, agent_cached."""
    hits = cache.get_many(requests["cache_key"]) if cache is not None else pl.DataFrame(
        schema={"cache_key": pl.String, "answer": pl.String})
    todo = requests.join(hits.select("cache_key"), on="cache_key", how="anti").unique("cache_key", maintain_order=True)
    if not agent.is_configured:
        fresh = todo.select("cache_key", answer=pl.lit(None, pl.String),
                            agent_error=pl.lit(f"agent endpoint not configured (set {ENV_BASE_URL})"))
    else:
        got = run_sync(ask_all(todo, agent)) if todo.height else []
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


def judge_answers(rows: pl.DataFrame, judge: JudgeResource, rubric: Rubric, cache: ReplayCache | None) -> pl.DataFrame:
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


# -- the replay ---------------------------------------------------------------------------------

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
    rows = judge_answers(ask_agent(build_requests(chosen, versions, agent), agent, cache), judge, rubric, cache)
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
    """McNemar + paired CI (`paired.paired_pass_rate`) over all cases with both verdicts, and over
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


def replayer(con: duckdb.DuckDBPyConnection, agent: AgentReplayResource,
             judge: JudgeResource) -> Callable[[dict], pl.DataFrame] | None:
    """change -> its `impact_metrics` replay rows: the agent's latest held-out snapshot replayed
    under the change's old and new version (answers cached in `con`). None when the agent or the
    judge is not configured, or there is no snapshot yet."""
    if not (agent.is_configured and judge.is_configured and table_exists(con, "eval_set_snapshots")):
        return None
    cache, rubric = ReplayCache(con), load_rubric(RUBRIC_ID)

    def replay(change: dict) -> pl.DataFrame:
        cases = con.execute("SELECT * FROM eval_set_snapshots WHERE agent_id = ? "
                            "QUALIFY week = max(week) OVER ()", [change["agent_id"]]).pl()
        replayed = replay_cases(cases, (change["before_version"], change["after_version"]), agent, judge,
                                rubric, cache)
        return replay_metric_rows(change, paired_summary(replayed))

    return replay
