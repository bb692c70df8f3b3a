"""What the replay sends: which held-out cases, the chat messages of each, and their cache keys.

Per case (the `test` split, and every canary case whatever its split) and version, the agent
gets the case's context turns as user/assistant messages and then its user message.
Cache key of an answer: sha256 of (the exact messages sent, the model name, `agent_params`),
so a changed case text, system prompt, model or sampling setting is a miss, while a moved
endpoint serving the same model names is not. No calls here (`agent.py`), no cache access
(`replay_cache.py`).
"""

import hashlib
import json
from collections.abc import Sequence

import polars as pl

from feedback_pipeline.impact.agent import AgentReplayResource

SIDES = ("before", "after")
_REQUEST_SCHEMA = {c: pl.String for c in ("case_id", "side", "version", "model", "messages", "context_text",
                                          "user_message", "cache_key")}


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


def build_requests(cases: pl.DataFrame, versions: Sequence[str], agent: AgentReplayResource) -> pl.DataFrame:
    """One row per case and side: the messages to send and their cache key."""
    params = json.dumps(agent.agent_params(), sort_keys=True)
    contexts = cases["context"].to_list() if "context" in cases.columns else [None] * cases.height
    agent_ids = cases["agent_id"].to_list() if "agent_id" in cases.columns else [None] * cases.height
    rows = []
    for side, version in zip(SIDES, versions):
        for case_id, user, context, agent_id in zip(cases["case_id"], cases["user_message"], contexts, agent_ids):
            model = agent.model_for(version, agent_id)
            messages = build_messages(context, user, agent.system_prompt)
            body = json.dumps({"messages": messages, "model": model, "params": params}, sort_keys=True)
            rows.append({"case_id": case_id, "side": side, "version": version, "model": model,
                         "messages": json.dumps(messages), "context_text": _context_text(context),
                         "user_message": user, "cache_key": hashlib.sha256(body.encode()).hexdigest()})
    return pl.DataFrame(rows, schema=_REQUEST_SCHEMA)
