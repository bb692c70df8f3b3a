"""What follows a turn once its truth is drawn: the user's feedback and the tool calls.

Thumbs, escalations (with a reason), rewrites, and the tool-call list with its
latencies, each drawn from whether the turn failed and in which category. Who fails
and how often is decided in `simulation`; the text of a turn lives in `world_text`.
"""

import numpy as np
import polars as pl
import pyarrow as pa

from feedback_pipeline.demo import world_text as wt
from feedback_pipeline.demo.draws import categorical, lookup
from feedback_pipeline.demo.scenario import AGENTS
from feedback_pipeline.demo.world_text import CATEGORIES, TOOL
from feedback_pipeline.ingest.contract import ESCALATION_REASONS, TOOL_CALL_DTYPE, TOOL_STATUSES

REASON_FOR_CATEGORY = {c: ("agent_could_not_answer" if c == "could_not_answer" else c) for c in CATEGORIES}
THUMBS = pl.Series([None, "up", "down"], dtype=pl.String)  # the values of feedback()["thumbs"] codes
REASONS = pl.Series([None, *ESCALATION_REASONS], dtype=pl.String)  # ... and of its "reason" codes


def feedback(rng: np.random.Generator, fail: np.ndarray, category: np.ndarray, concise: np.ndarray,
             heavy: np.ndarray, last_turn: np.ndarray) -> dict[str, np.ndarray]:
    """Thumbs (codes into THUMBS), escalation and reason (codes into REASONS), rewrites."""
    n, cat = len(fail), np.maximum(category, 0)
    p_rated = np.where(fail, np.array([.9, 1.0, 1.4, 1.0, 1.2, .9])[cat] * 0.18 * np.where(concise, .35, 1),
                       np.where(concise, .011, .015))
    rated = rng.random(n) < np.where(heavy, 0.7, p_rated)
    p_down = np.where(heavy, np.where(fail, .92, .6), np.where(fail, np.where(concise, .75, .88), .12))
    down = rng.random(n) < p_down
    escalated = rng.random(n) < np.where(fail, np.array([.20, .10, .14, .25, .30, .08])[cat],
                                         np.where(concise, .015, .008))
    u = rng.random(n)
    matching = np.array([ESCALATION_REASONS.index(REASON_FOR_CATEGORY[c]) for c in CATEGORIES])[cat]
    human, other = ESCALATION_REASONS.index("user_requested_human"), ESCALATION_REASONS.index("other")
    reason = np.where(fail, np.where(u < .8, matching, np.where(u < .94, human, other)),
                      np.where(u < .8, human, other))
    rewrote = ~last_turn & (rng.random(n) < np.where(fail, np.where(concise, .5, .4), .06))
    return {"thumbs": np.where(rated, np.where(down, 2, 1), 0), "escalated": escalated,
            "reason": np.where(escalated, reason + 1, 0), "rewrote": rewrote}


def tool_calls(rng: np.random.Generator, intent: np.ndarray, category: np.ndarray
               ) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """(tool_calls list column, calls per turn, summed tool latency per turn).

    The intent's tool, sometimes a second; an error marks nearly every tool_failed turn.
    """
    n, names = len(intent), wt.AGENT_ORDER
    tool_names = [t for a in names for t in AGENTS[a].tools]
    primary = np.array([tool_names.index(i.tool) if i.tool else 2 * names.index(a) for a, i in wt.INTENT_KEYS])
    uses_tool = np.array([i.tool is not None for _, i in wt.INTENT_KEYS])[intent]
    n_calls = np.where(uses_tool, categorical(rng, np.array([.1, .7, .2]), 0, n),
                       (rng.random(n) < .05).astype(np.int64))
    n_calls = np.where(category == TOOL, np.maximum(n_calls, 1), n_calls)
    turn = np.repeat(np.arange(n), n_calls)
    offsets = np.concatenate([[0], np.cumsum(n_calls)])
    position = np.arange(len(turn)) - offsets[turn]
    tool = np.where(position == 0, primary[intent[turn]], primary[intent[turn]] ^ 1)
    error = np.where(category[turn] == TOOL, (position == n_calls[turn] - 1) & (rng.random(len(turn)) < .9),
                     rng.random(len(turn)) < .015)
    timeout = rng.random(len(turn)) < .5
    latency = np.where(
        error, np.where(timeout, rng.integers(3000, 10_000, len(turn)), rng.integers(20, 200, len(turn))),
        np.where(tool == tool_names.index("search_flights"), 900, 250) * rng.lognormal(0, .5, len(turn)),
    ).astype(np.int64)
    calls = pl.from_arrow(pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [lookup(tool_names, tool).to_arrow(), lookup(TOOL_STATUSES, error).to_arrow(),
             pa.array(latency, pa.int64())], names=["name", "status", "latency_ms"])))
    return calls.cast(TOOL_CALL_DTYPE), n_calls, np.bincount(turn, weights=latency, minlength=n)
