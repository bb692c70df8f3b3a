"""The weekly held-out replay: the agent version live in week W answers W's held-out cases.

Pure functions over Polars frames (the `heldout_replay` asset loads and writes): which version
is live per agent (`live_versions`), and the `HeldoutReplay` rows of one week (`replay_week`):
the test split plus the canary of each agent's snapshot of W, asked of the agent under that
version's name and graded by the judge with the snapshot's rubric, through the paired
replay's `ask_agent` / `judge_answers` (same answer cache, same judge cache). A failed call
is that case's `error`, never a verdict. The pass-rate statistics: `heldout_stats.py`.

The version asked for is "<prompt_version>|<retrieval_version>|<model>" as seen in the
week's traffic (`AgentReplayResource.models` may map it to a deployment's model name): a
production endpoint serving only the live agent answers for the live version, and a replay
of a past week needs an endpoint that still serves that week's version.
"""

from datetime import date

import polars as pl

from feedback_pipeline.frames import empty_frame, polars_schema
from feedback_pipeline.impact.agent import AgentReplayResource
from feedback_pipeline.impact.replay import ask_agent, judge_answers
from feedback_pipeline.impact.replay_cache import ReplayCache
from feedback_pipeline.impact.replay_requests import build_requests, select_cases
from feedback_pipeline.impact.schemas import HeldoutReplay
from feedback_pipeline.rubrics import RUBRIC_ID, load_rubric
from feedback_pipeline.scoring.judge import JudgeResource

VERSION_PARTS = ("prompt_version", "retrieval_version", "model")
SEPARATOR = "|"


def version_name(prompt_version: str | None, retrieval_version: str | None, model: str | None) -> str:
    return SEPARATOR.join(v or "" for v in (prompt_version, retrieval_version, model))


def live_versions(configs: pl.DataFrame, week: date | str) -> dict[str, str]:
    """agent_id -> the version live at the end of `week`: among the configurations seen that week,
    the one first seen latest (a rollout in progress counts as live), then the most traffic.

    configs: agent_id, week, prompt_version, retrieval_version, model, n (traces) for weeks ≤ `week`.
    """
    if configs.is_empty():
        return {}
    keys = ["agent_id", *VERSION_PARTS]
    seen = configs.group_by(keys).agg(first_seen=pl.col("week").min())
    week = date.fromisoformat(week) if isinstance(week, str) else week
    now = configs.filter(pl.col("week").cast(pl.Date) == week).join(seen, on=keys, how="left", nulls_equal=True)
    chosen = now.sort(["agent_id", "first_seen", "n"], descending=[False, True, True]).unique("agent_id", keep="first")
    return {r["agent_id"]: version_name(*(r[k] for k in VERSION_PARTS)) for r in chosen.iter_rows(named=True)}


def replay_week(cases: pl.DataFrame, versions: dict[str, str], agent: AgentReplayResource, judge: JudgeResource,
                cache: ReplayCache | None = None) -> pl.DataFrame:
    """`HeldoutReplay` rows of one week: `cases` are `eval_set_snapshots` rows of that week."""
    parts = []
    for (agent_id,), group in cases.sort("case_id").group_by("agent_id", maintain_order=True):
        chosen = select_cases(group)
        gold = chosen.select("case_id", gold_verdict="verdict") if "verdict" in chosen.columns else None
        chosen = chosen.drop("verdict", "failure_category", strict=False)
        if chosen.is_empty():
            continue
        version = versions.get(agent_id)
        if version is None:
            rows = chosen.with_columns(version=pl.lit(None, pl.String), model=pl.lit(None, pl.String),
                                       answer=pl.lit(None, pl.String), verdict=pl.lit(None, pl.String),
                                       failure_category=pl.lit(None, pl.String),
                                       error=pl.lit("no traffic of this agent in the week: no live version"))
        else:
            rubric_version = group["rubric_version"].max() if "rubric_version" in group.columns else None
            rubric = load_rubric(RUBRIC_ID, rubric_version)
            judged = judge_answers(ask_agent(build_requests(chosen, (version,), agent), agent, cache),
                                   judge, rubric, cache)
            rows = chosen.join(judged.select("case_id", "version", "model", "answer", verdict="judge_verdict",
                                             failure_category="judge_failure_category", error="error",
                                             agent_cached="agent_cached", judge_cached="judge_cached"),
                               on="case_id", how="left", maintain_order="left")
        parts.append(rows.join(gold, on="case_id", how="left", maintain_order="left") if gold is not None else rows)
    if not parts:
        return empty_frame(HeldoutReplay)
    schema = polars_schema(HeldoutReplay)
    out = pl.concat([p.select([(pl.col(c) if c in p.columns else pl.lit(None)).cast(t).alias(c)
                               for c, t in schema.items()]) for p in parts])
    # A verdict without error, or an error without verdict (an answer the judge skipped silently is an error).
    return out.with_columns(error=pl.when(pl.col("verdict").is_null()).then(
        pl.coalesce("error", pl.lit("no verdict"))).otherwise(None))
