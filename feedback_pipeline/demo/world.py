"""The bundled demo world: synthetic agent traces whose true outcomes are known.

`generate_turns` simulates traces and their hidden truth in memory (vectorized; the
benchmarks use it for a million traces). `generate_world` writes them as landing
files in a mix of formats, with planted releases, malformed records and duplicates,
plus the truth files that only demo simulators and tests read, never the pipeline.
Text templates and PII live in `world_text`.
"""

import gzip
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from feedback_pipeline.demo import world_text as wt
from feedback_pipeline.demo.world_text import CATEGORIES, PASS, TOOL
from feedback_pipeline.ingest.contract import ESCALATION_REASONS, TOOL_CALL_DTYPE, TOOL_STATUSES

DEMO_FIRST_WEEK = date(2026, 9, 28)  # a Monday; 8 weeks end with the week of 2026-11-16
FAILURE_CATEGORIES = CATEGORIES
REASON_FOR_CATEGORY = {c: ("agent_could_not_answer" if c == "could_not_answer" else c) for c in CATEGORIES}
VERSION_DIMENSIONS = ("prompt_version", "retrieval_version", "model")
TURN_COLUMNS = (
    "trace_id", "conversation_id", "turn_index", "timestamp", "agent_id", "vertical", "channel",
    "intent", "user_id", "user_message", "agent_response", "tool_calls", "latency_ms",
    "prompt_version", "retrieval_version", "model", "feedback",
)
TRUTH_COLUMNS = ("trace_id", "agent_id", "week", "true_verdict", "true_failure_category")
MALFORMED_KINDS = (
    "bad_json", "not_an_object", "missing_field", "mistyped_field", "bad_timestamp",
    "negative_latency", "bad_thumbs", "unknown_escalation_reason", "reason_without_escalation",
    "bad_tool_status", "invalid_utf8",
)
_WEEK_MS = 7 * 86_400_000
_CONVERSATION_SIGMA = 1.0  # sd of the conversation random effect on the failure log-odds
_HEAVY_CLICKERS_PER_AGENT = 8


@dataclass(frozen=True)
class AgentSpec:
    vertical: str
    share: float  # of all turns
    versions: tuple[str, str, str]  # as in VERSION_DIMENSIONS, before any release
    category_rates: tuple[float, ...]  # true rate of each failure category, as a share of turns
    channels: tuple[tuple[str, float], ...]
    tools: tuple[str, str]
    latency_ms: float  # median model latency before tools


AGENTS: dict[str, AgentSpec] = {
    "dental_front_desk": AgentSpec(
        "dental", .30, ("dental-v3", "dental-kb-2026.09", "llm-large-2026-07"),
        (.05, .04, .03, .03, .005, .025), (("web", .45), ("sms", .35), ("app", .20)),
        ("book_appointment", "check_insurance"), 1100),
    "refunds": AgentSpec(
        "ecommerce", .45, ("refunds-v12", "refunds-kb-v5", "llm-medium-2026-06"),
        (.03, .03, .015, .025, .005, .015), (("web", .40), ("app", .45), ("email", .15)),
        ("lookup_order", "issue_refund"), 1400),
    "travel": AgentSpec(
        "travel", .25, ("travel-v7", "travel-kb-2026.08", "llm-large-2026-07"),
        (.04, .035, .02, .03, .005, .02), (("app", .50), ("web", .35), ("whatsapp", .15)),
        ("search_flights", "change_booking"), 1800),
}
assert tuple(AGENTS) == wt.AGENT_ORDER


@dataclass(frozen=True)
class Release:
    release_id: str
    agent_id: str
    dimension: str
    before: str
    after: str
    week_offset: int  # weeks after first_week when the new version goes live
    rollout: tuple[float, ...]  # share of conversations on the new version in its 1st, 2nd, ... week
    category_rates_after: tuple[float, ...] | None  # None: no true effect
    concise_after: bool  # terse answers, more refusals/disclaimers, fewer ratings
    expected_effect: str
    description: str


RELEASES: tuple[Release, ...] = (
    Release("dental_prompt_v4", "dental_front_desk", "prompt_version", "dental-v3", "dental-v4", 3,
            (1.0,), (.025, .03, .01, .025, .005, .015), False, "helps",
            "Rewritten front-desk prompt: fewer could-not-answer and tone failures; shape unchanged."),
    Release("refunds_retrieval_kb_v6", "refunds", "retrieval_version", "refunds-kb-v5", "refunds-kb-v6", 4,
            (1.0,), (.03, .08, .015, .025, .005, .015), False, "hurts",
            "Re-chunked knowledge base retrieves stale policy pages: wrong_information 3% -> 8% of turns."),
    Release("travel_prompt_v8_concise", "travel", "prompt_version", "travel-v7", "travel-v8-concise", 5,
            (0.5, 1.0), (.10, .03, .015, .03, .005, .02), True, "proxy_gaming",
            "Terse prompt, 50/50 A/B for one week then 100%: much shorter answers, more refusals and "
            "disclaimers, fewer ratings so thumbs-down drops, while true failures rise (could_not_answer)."),
    Release("dental_model_redeploy", "dental_front_desk", "model", "llm-large-2026-07",
            "llm-large-2026-07-r2", 6, (1.0,), None, False, "none",
            "A/A: the same model re-deployed under a new version string; no true effect."),
)
NULL_AGENT_WEEK = ("refunds", 6)  # week offset with no change at all vs the week before


# -- the world model ---------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    agent: int
    versions: tuple[str, str, str]
    rates: tuple[float, ...]
    concise: bool


def _arms(agent_id: str, week: int) -> list[tuple[_State, float]]:
    """The configurations live for an agent in a week, with their share of conversations."""
    spec, agent = AGENTS[agent_id], wt.AGENT_ORDER.index(agent_id)
    state = _State(agent, spec.versions, spec.category_rates, False)
    arms = [(state, 1.0)]
    for r in sorted((r for r in RELEASES if r.agent_id == agent_id), key=lambda r: r.week_offset):
        if r.week_offset > week:
            continue
        share = r.rollout[min(week - r.week_offset, len(r.rollout) - 1)]
        versions = list(state.versions)
        versions[VERSION_DIMENSIONS.index(r.dimension)] = r.after
        new = _State(agent, tuple(versions), r.category_rates_after or state.rates,
                     state.concise or r.concise_after)
        arms = [(new, 1.0)] if share >= 1 else [(new, share), (state, 1 - share)]
        state = new
    return arms


def _intercept(target: float, difficulty: np.ndarray, weight: np.ndarray) -> float:
    """Log-odds intercept whose marginal failure rate over intents and conversations is target."""
    x, h = np.polynomial.hermite_e.hermegauss(40)
    h = h / h.sum()
    lo, hi = -15.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        z = mid + difficulty[:, None] + _CONVERSATION_SIGMA * x[None, :]
        rate = float((weight[:, None] * h[None, :] / (1 + np.exp(-z))).sum())
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return (lo + hi) / 2


def _categorical(rng: np.random.Generator, probs: np.ndarray, group: np.ndarray | int, n: int) -> np.ndarray:
    """One draw per row from the row's group's distribution (rows of `probs`, summing to 1)."""
    cum = np.atleast_2d(probs).cumsum(1)
    cum[:, -1] = 1.0
    g = np.broadcast_to(np.asarray(group), (n,))
    return (rng.random(n)[:, None] >= cum[g]).sum(1)


def _lookup(values: Sequence[str], codes: np.ndarray) -> pl.Series:
    """values[codes] as a polars String Series (much faster than a numpy unicode array)."""
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(codes, dtype=np.int64))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64, so distinct inputs give distinct ids."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_HEX_PAIRS = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), dtype=np.uint8).reshape(256, 2)


def _hex_ids(prefix: str, values: np.ndarray, width: int = 16) -> pl.Series:
    """prefix + the last `width` hex digits of each uint64, without a Python loop."""
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    chars = np.ascontiguousarray(_HEX_PAIRS[raw].reshape(-1, 16)[:, 16 - width:])
    return prefix + pl.Series(chars.view(f"S{width}").ravel()).cast(pl.String)


_TIMEZONES = (("Z", 0, .55), ("+01:00", 60, .12), ("+02:00", 120, .10), ("-04:00", -240, .08),
              ("-05:00", -300, .08), ("+05:30", 330, .04), ("+10:00", 600, .03))
_HOURLY = np.array([.2, .15, .1, .1, .1, .15, .3, .5, .8, 1, 1, 1, 1, 1, 1, 1, 1, .95, .9, .8, .7, .6, .45, .3])
_DAILY = np.array([1, 1, 1, 1, 1, .75, .7])
_THUMBS = pl.Series([None, "up", "down"], dtype=pl.String)
_REASONS = pl.Series([None, *ESCALATION_REASONS], dtype=pl.String)
_CATEGORIES = pl.Series([None, *CATEGORIES], dtype=pl.String)


def _state_table(weeks: int) -> tuple[list[_State], np.ndarray, np.ndarray]:
    """Distinct states, and per (agent, week) the state of arm 0 / arm 1 and arm 0's share."""
    states: list[_State] = []
    arm_state = np.zeros((len(AGENTS), weeks, 2), dtype=np.int64)
    arm_share = np.ones((len(AGENTS), weeks))
    for a, agent_id in enumerate(AGENTS):
        for w in range(weeks):
            arms = _arms(agent_id, w)
            for state, _ in arms:
                if state not in states:
                    states.append(state)
            arm_state[a, w] = [states.index(arms[0][0]), states.index(arms[-1][0])]
            arm_share[a, w] = arms[0][1]
    return states, arm_state, arm_share


def _feedback(rng: np.random.Generator, fail: np.ndarray, category: np.ndarray, concise: np.ndarray,
              heavy: np.ndarray, last_turn: np.ndarray) -> dict[str, np.ndarray]:
    """Thumbs (codes into _THUMBS), escalation and reason (codes into _REASONS), rewrites."""
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


def _tool_calls(rng: np.random.Generator, intent: np.ndarray, category: np.ndarray
                ) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """(tool_calls list column, calls per turn, summed tool latency per turn).

    The intent's tool, sometimes a second; an error marks nearly every tool_failed turn.
    """
    n, names = len(intent), wt.AGENT_ORDER
    tool_names = [t for a in names for t in AGENTS[a].tools]
    primary = np.array([tool_names.index(i.tool) if i.tool else 2 * names.index(a) for a, i in wt.INTENT_KEYS])
    uses_tool = np.array([i.tool is not None for _, i in wt.INTENT_KEYS])[intent]
    n_calls = np.where(uses_tool, _categorical(rng, np.array([.1, .7, .2]), 0, n),
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
            [_lookup(tool_names, tool).to_arrow(), _lookup(TOOL_STATUSES, error).to_arrow(),
             pa.array(latency, pa.int64())], names=["name", "status", "latency_ms"])))
    return calls.cast(TOOL_CALL_DTYPE), n_calls, np.bincount(turn, weights=latency, minlength=n)


def _start_times(rng: np.random.Generator, n_conv: int) -> np.ndarray:
    """Conversation start, in ms after the week's Monday 00:00 UTC: quieter nights and weekends."""
    return (_categorical(rng, _DAILY / _DAILY.sum(), 0, n_conv) * 86_400_000
            + _categorical(rng, _HOURLY / _HOURLY.sum(), 0, n_conv) * 3_600_000
            + rng.integers(0, 3_600_000, n_conv))


def _simulate(n_turns: int, seed: int, first_week: date, weeks: int,
              agents: Sequence[str] | None) -> pl.DataFrame:
    """Every turn with its contract fields and its hidden truth, by conversation then turn."""
    rng = np.random.default_rng([seed, first_week.toordinal(), weeks])
    id_key = rng.integers(0, 2**63, dtype=np.uint64)
    names, intents = wt.AGENT_ORDER, wt.INTENT_KEYS
    chosen = list(agents) if agents is not None else list(names)
    unknown = set(chosen) - set(names)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; known: {list(names)}")

    # Conversations: lengths 1-6, cut so that the turns add up to n_turns exactly.
    lengths = 1 + _categorical(rng, np.array([.34, .24, .17, .12, .08, .05]), 0, max(n_turns, 1))
    ends = np.cumsum(lengths)
    n_conv = int(np.searchsorted(ends, n_turns)) + 1 if n_turns else 0
    lengths = lengths[:n_conv].copy()
    if n_conv:
        lengths[-1] -= ends[n_conv - 1] - n_turns

    # States (configurations live per agent-week) and their calibrated failure intercepts.
    states, arm_state, arm_share = _state_table(weeks)
    difficulty = np.array([i.difficulty for _, i in intents])
    intent_weight = np.zeros((len(names), len(intents)))
    for g, (agent_id, intent) in enumerate(intents):
        intent_weight[names.index(agent_id), g] = intent.weight
    intent_weight /= intent_weight.sum(1, keepdims=True)
    alpha = np.array([_intercept(sum(s.rates), difficulty, intent_weight[s.agent]) for s in states])
    category_mix = np.array([np.array(s.rates) / sum(s.rates) for s in states])

    # Per conversation: agent, week, arm, intent, channel, user, time zone, random effect.
    share = np.array([AGENTS[a].share if a in chosen else 0.0 for a in names])
    c_agent = _categorical(rng, share / share.sum(), 0, n_conv)
    week_weight = 1 + 0.04 * rng.standard_normal(weeks)
    c_week = _categorical(rng, week_weight / week_weight.sum(), 0, n_conv)
    c_state = np.where(rng.random(n_conv) < arm_share[c_agent, c_week],
                       arm_state[c_agent, c_week, 0], arm_state[c_agent, c_week, 1])
    c_intent = _categorical(rng, intent_weight, c_agent, n_conv)
    channel_names = sorted({c for s in AGENTS.values() for c, _ in s.channels})
    channel_p = np.array([[dict(AGENTS[a].channels).get(c, 0.0) for c in channel_names] for a in names])
    c_channel = _categorical(rng, channel_p, c_agent, n_conv)
    c_heavy = rng.random(n_conv) < 0.015  # heavy clickers: few users, many ratings
    pool = np.maximum(20, (n_conv * share / share.sum() / 1.6).astype(np.int64))
    regular = (pool[c_agent] * rng.random(n_conv) ** 1.6).astype(np.uint64)
    heavy = rng.integers(0, _HEAVY_CLICKERS_PER_AGENT, n_conv).astype(np.uint64)
    user_num = (c_agent.astype(np.uint64) << np.uint64(40)) + np.where(
        c_heavy, (np.uint64(1) << np.uint64(36)) + heavy, regular)
    user_hash = _mix64(user_num ^ id_key)
    tz_cum = np.cumsum([p for *_, p in _TIMEZONES])
    c_tz = np.minimum(np.searchsorted(tz_cum, (user_hash >> np.uint64(11)) / 2.0**53, side="right"),
                      len(_TIMEZONES) - 1)  # a user keeps one time zone
    c_effect = _CONVERSATION_SIGMA * rng.standard_normal(n_conv)

    # Per turn.
    conv = np.repeat(np.arange(n_conv), lengths)
    first = np.cumsum(lengths) - lengths
    turn_index = np.arange(n_turns) - first[conv]
    agent, state, intent = c_agent[conv], c_state[conv], c_intent[conv]
    concise = np.array([s.concise for s in states], dtype=bool)[state]
    fail = rng.random(n_turns) < 1 / (1 + np.exp(-(alpha[state] + difficulty[intent] + c_effect[conv])))
    category = np.where(fail, _categorical(rng, category_mix, state, n_turns), PASS)
    fb = _feedback(rng, fail, category, concise, c_heavy[conv], turn_index == lengths[conv] - 1)
    prev_rewrote = np.concatenate([[False], fb["rewrote"][:-1]]) & (turn_index > 0)
    tool_calls, n_calls, tool_latency = _tool_calls(rng, intent, category)
    text = wt.compose(rng, agent, intent, turn_index, prev_rewrote, category, concise)
    chars = text["agent_response"].str.len_chars().to_numpy()
    latency = (np.array([AGENTS[a].latency_ms for a in names])[agent] * rng.lognormal(0, .35, n_turns)
               * np.where(concise, .6, 1) + 5 * chars + tool_latency).astype(np.int64)

    # Timestamps: turns follow their conversation's start after the user's think time.
    gap = np.where(turn_index > 0, 15_000 + np.minimum(rng.lognormal(np.log(45_000), .8, n_turns), 900_000)
                   + np.concatenate([[0], latency[:-1]]), 0).astype(np.int64)
    elapsed = np.cumsum(gap)
    offset = elapsed - elapsed[first][conv]
    duration = offset[np.cumsum(lengths) - 1] if n_conv else np.zeros(0, dtype=np.int64)
    start = np.minimum(_start_times(rng, n_conv), _WEEK_MS - 1_000 - duration)
    week_start = int(datetime.combine(first_week, datetime.min.time(), timezone.utc).timestamp() * 1000)
    ts_ms = week_start + c_week[conv].astype(np.int64) * _WEEK_MS + start[conv] + offset
    tz = c_tz[conv]

    frame = pl.DataFrame({
        "trace_id": _hex_ids("tr_", _mix64(np.arange(n_turns, dtype=np.uint64) ^ id_key)),
        "conversation_id": _hex_ids("cv_", _mix64(np.arange(n_conv, dtype=np.uint64) ^ ~id_key)).gather(conv),
        "turn_index": turn_index.astype(np.int64),
        "ts_ms": ts_ms,
        "tz_minutes": np.array([m for _, m, _ in _TIMEZONES])[tz],
        "tz_suffix": _lookup([s for s, _, _ in _TIMEZONES], tz),
        "agent_id": _lookup(names, agent),
        "vertical": _lookup([AGENTS[a].vertical for a in names], agent),
        "channel": _lookup(channel_names, c_channel[conv]),
        "intent": _lookup([i.name for _, i in intents], intent),
        "user_id": _hex_ids("u_", user_hash, 12).gather(conv),
        "user_message": text["user_message"],
        "agent_response": text["agent_response"],
        "tool_calls": tool_calls,
        "latency_ms": latency,
        **{d: _lookup([s.versions[k] for s in states], state) for k, d in enumerate(VERSION_DIMENSIONS)},
        "thumbs": _THUMBS.gather(fb["thumbs"]),
        "escalated": fb["escalated"],
        "escalation_reason": _REASONS.gather(fb["reason"]),
        "user_rewrote": fb["rewrote"],
        "week": (np.datetime64(first_week, "D") + 7 * c_week[conv]).astype("datetime64[D]"),
        "true_verdict": _lookup(("pass", "fail"), fail),
        "true_failure_category": _CATEGORIES.gather(category + 1),
        "heavy_clicker": c_heavy[conv],
        "is_refusal": text["is_refusal"],
        "has_disclaimer": text["has_disclaimer"],
        "n_tool_calls": n_calls,
    })
    local = pl.from_epoch("ts_ms", time_unit="ms") + pl.duration(minutes=pl.col("tz_minutes"))
    millis = pl.lit(".") + (pl.col("ts_ms") % 1000).cast(pl.String).str.zfill(3)
    return frame.with_columns(
        week=pl.col("week").cast(pl.Date),
        timestamp=pl.concat_str([  # app clients send milliseconds; a user's offset or Z
            local.dt.strftime("%Y-%m-%dT%H:%M:%S"),
            pl.when(pl.col("channel") == "app").then(millis).otherwise(pl.lit("")),
            pl.col("tz_suffix")]),
    )


def _turns_and_truth(world: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    feedback = pl.struct("thumbs", "escalated", "escalation_reason", "user_rewrote").alias("feedback")
    turns = world.select([feedback if c == "feedback" else pl.col(c) for c in TURN_COLUMNS])
    return turns, world.select(TRUTH_COLUMNS)


def generate_turns(n_turns: int, seed: int, first_week: date = DEMO_FIRST_WEEK, weeks: int = 1,
                   agents: Sequence[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(turns in the landing-contract shape, their hidden truth), deterministic by seed.

    Turns have the nested `feedback` struct and `tool_calls` list, and `timestamp` as an
    ISO-8601 string; the truth frame has TRUTH_COLUMNS. Weeks count from `first_week`,
    and the planted RELEASES apply by week offset from it.
    """
    return _turns_and_truth(_simulate(n_turns, seed, first_week, weeks, agents))


# -- landing files -----------------------------------------------------------------------

_LOCALES = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "pt-BR")
_JUNK = np.concatenate([np.arange(0x20, 0x7F), np.setdiff1d(np.arange(0x80, 0xC0), [0x85]),
                        np.arange(0xF8, 0x100)]).astype(np.uint8)  # never valid UTF-8, never a line break


def _landing_file(week: date, week_offset: int, agent_id: str) -> str:
    """Where one agent-week lands (relative to landing/): mostly gzip JSONL, some plain, some Parquet."""
    folder = f"demo/{week.isoformat()}"
    if agent_id == "refunds" and week_offset % 4 == 2:
        return f"{folder}/{agent_id}.parquet"
    if agent_id == "travel" and week_offset % 3 == 1:
        return f"{folder}/{agent_id}.jsonl"
    if agent_id == "dental_front_desk" and week_offset == 5:
        return f"{folder}/{agent_id}/part-{{part}}.jsonl.gz"  # split in two by weekday
    return f"{folder}/{agent_id}.jsonl.gz"


def _json_lines(frame: pl.DataFrame) -> pl.Series:
    feedback = pl.struct("thumbs", "escalated", "escalation_reason", "user_rewrote").alias("feedback")
    record = pl.struct([feedback if c == "feedback" else pl.col(c) for c in TURN_COLUMNS])
    return frame.select(record.struct.json_encode())[:, 0]


def _corrupt(lines: pl.DataFrame) -> pl.Series:
    """Apply each row's malformed `kind` (with `variant` 0-3) to its JSON `line`."""
    line, v = pl.col("line"), pl.col("variant")

    def by_variant(*options: pl.Expr | str) -> pl.Expr:
        expr = pl.when(v == 0).then(options[0])
        for k, option in enumerate(options[1:], start=1):
            expr = expr.when(v == k).then(option)
        return expr.otherwise(options[-1])

    reason_re = r'"escalated":(true|false),"escalation_reason":(null|"[a-z_]+")'
    kinds = {
        "bad_json": line.str.slice(0, (line.str.len_chars() * (0.2 + 0.2 * v)).cast(pl.Int64)),
        "not_an_object": by_variant(pl.lit('["not", "an", "object"]'), pl.lit("42"),
                                    pl.lit('"just a string"'), pl.lit("null")),
        "missing_field": by_variant(line.str.replace(r'^\{"trace_id":"[^"]*",', "{"),
                                    line.str.replace(r',"timestamp":"[^"]*"', ""),
                                    line.str.replace(r',"agent_id":"[^"]*"', ""),
                                    line.str.replace(r',"conversation_id":"[^"]*"', "")),
        "mistyped_field": by_variant(line.str.replace(r'"turn_index":\d+', '"turn_index":"three"'),
                                     line.str.replace(r'"latency_ms":\d+,"prompt', '"latency_ms":"fast","prompt'),
                                     line.str.replace(r'"escalated":(true|false)', '"escalated":"yes"')),
        "bad_timestamp": line.str.replace(r'"timestamp":"[^"]*"', pl.lit('"timestamp":"') + by_variant(
            pl.lit("2026-02-30T25:61:00Z"), pl.lit("yesterday afternoon"), pl.lit("")) + '"'),
        "negative_latency": line.str.replace(r'"latency_ms":\d+,"prompt', pl.lit('"latency_ms":-')
                                             + (pl.col("latency_ms") + 1).cast(pl.String) + ',"prompt'),
        "bad_thumbs": line.str.replace(r'"thumbs":(null|"up"|"down")', pl.lit('"thumbs":"') + by_variant(
            pl.lit("sideways"), pl.lit("meh"), pl.lit("thumbs_down")) + '"'),
        "unknown_escalation_reason": line.str.replace(reason_re, pl.lit(
            '"escalated":true,"escalation_reason":"') + by_variant(
            pl.lit("bot_was_rude"), pl.lit("wants_discount"), pl.lit("slow_response")) + '"'),
        "reason_without_escalation": line.str.replace(reason_re, pl.lit(
            '"escalated":false,"escalation_reason":"') + by_variant(
            pl.lit("tone_wrong"), pl.lit("tool_failed"), pl.lit("agent_could_not_answer"),
            pl.lit("wrong_information")) + '"'),
        "bad_tool_status": line.str.replace(r'"status":"(ok|error)"', pl.lit('"status":"') + by_variant(
            pl.lit("timeout"), pl.lit("pending"), pl.lit("failed"), pl.lit("unknown")) + '"'),
        "invalid_utf8": pl.lit("\u0000JUNK") + pl.col("row").cast(pl.String) + "\u0000",
    }
    (kind, corrupted), *rest = kinds.items()
    expr = pl.when(pl.col("kind") == kind).then(corrupted)
    for kind, corrupted in rest:
        expr = expr.when(pl.col("kind") == kind).then(corrupted)
    out = lines.select(expr.otherwise(line))[:, 0]
    assert (out != lines["line"]).all(), "every malformed record must differ from its source"
    return out


def _conflict(lines: pl.DataFrame) -> pl.Series:
    """A re-send of the same trace_id with different content: late thumbs, or a regenerated answer."""
    line = pl.col("line")
    late_thumbs = (pl.when(line.str.contains('"thumbs":"down"', literal=True))
                   .then(line.str.replace('"thumbs":"down"', '"thumbs":"up"', literal=True))
                   .otherwise(line.str.replace(r'"thumbs":(null|"up")', '"thumbs":"down"')))
    regenerated = line.str.replace('"agent_response":"', '"agent_response":"(regenerated) ', literal=True)
    return lines.select(pl.when(pl.col("variant") % 2 == 0).then(late_thumbs).otherwise(regenerated))[:, 0]


def _pick_rows(rng: np.random.Generator, candidates: np.ndarray, eligible: np.ndarray, n: int) -> np.ndarray:
    pool = candidates[eligible[candidates]]
    if len(pool) < n:
        raise ValueError("world too small for the requested malformed/duplicate records")
    return np.sort(rng.choice(pool, n, replace=False))


def _landing_lines(world: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Every JSONL line with its file, 1-based line number and injected `kind` (null if clean),
    and the world rows that were written malformed (their traces never reach the pipeline)."""
    n = world.height
    jsonl = ~world["file"].str.ends_with(".parquet").to_numpy()
    rows = np.flatnonzero(jsonl)
    n_bad = max(len(MALFORMED_KINDS), round(0.001 * len(rows)))
    n_exact, n_conflict = max(3, round(0.002 * len(rows))), max(2, round(0.0005 * len(rows)))
    n_blank = max(3, round(0.0003 * len(rows)))

    kinds = np.array(MALFORMED_KINDS)[rng.permutation(np.arange(n_bad) % len(MALFORMED_KINDS))]
    free = np.ones(n, dtype=bool)
    bad = np.empty(n_bad, dtype=np.int64)
    needs_tool = kinds == "bad_tool_status"
    bad[needs_tool] = _pick_rows(rng, rows, world["n_tool_calls"].to_numpy() > 0, int(needs_tool.sum()))
    free[bad[needs_tool]] = False
    bad[~needs_tool] = _pick_rows(rng, rows, free, int((~needs_tool).sum()))
    free[bad] = False
    exact = _pick_rows(rng, rows, free, n_exact)
    free[exact] = False
    conflict = _pick_rows(rng, rows, free, n_conflict)
    blank_before = _pick_rows(rng, rows, np.ones(n, dtype=bool), n_blank)

    kind = pl.Series(dtype=pl.String).extend_constant(None, n).scatter(bad, pl.Series(kinds))
    base = world.select("row", "trace_id", "file", "week", "ts_ms", "latency_ms", "extra_field").with_columns(
        line=_json_lines(world), kind=kind, variant=pl.Series(rng.integers(0, 4, n)))
    base = base.with_columns(line=pl.when("extra_field").then(
        pl.col("line").str.strip_suffix("}") + ',"locale":"'
        + pl.lit(pl.Series(_LOCALES).gather(rng.integers(0, len(_LOCALES), n))) + '"}').otherwise("line"))
    base = base.with_columns(base["line"].scatter(bad, _corrupt(base[bad])))
    resend = pl.concat([
        base[exact].with_columns(kind=pl.lit("exact_duplicate")),
        base[conflict].with_columns(kind=pl.lit("conflicting_duplicate"), line=_conflict(base[conflict])),
    ]).sort("ts_ms", "trace_id").with_columns(
        file=pl.lit("resend/") + pl.col("week").cast(pl.String) + "/resend.jsonl", order=pl.int_range(pl.len()))
    position = pl.col("row").cast(pl.Int64) * 2  # a blank line goes just before its row
    blanks = base[blank_before].with_columns(kind=pl.lit("blank_line"), line=pl.lit(""),
                                             trace_id=pl.lit(None, pl.String), order=position)
    records = base.filter(pl.Series(jsonl)).with_columns(order=position + 1)
    lines = pl.concat([records, blanks, resend], how="diagonal").sort("file", "order")
    return lines.with_columns(source_line=pl.int_range(1, pl.len() + 1).over("file")), bad


def _write_landing(home: Path, world: pl.DataFrame, lines: pl.DataFrame, rng: np.random.Generator) -> list[str]:
    landing, written = home / "landing", []
    for (path,), group in lines.group_by("file", maintain_order=True):
        data = ("\n".join(group["line"].to_list()) + "\n").encode()
        for token in group.filter(pl.col("kind") == "invalid_utf8")["line"].to_list():
            junk = rng.choice(_JUNK, int(rng.integers(12, 60))).tobytes()
            data = data.replace(token.encode(), (b'{"trace_id":"' if rng.random() < .5 else b"") + b"\xff" + junk)
        written.append(_write(landing / path, gzip.compress(data, 6, mtime=0) if path.endswith(".gz") else data))
    for (path,), group in world.filter(pl.col("file").str.ends_with(".parquet")).group_by(
            "file", maintain_order=True):
        turns, _ = _turns_and_truth(group)
        if group["extra_field"].all():
            turns = turns.with_columns(client_version=pl.lit("ios-5.2.1"))  # an unknown extra column
        written.append(_write(landing / path, turns))
    return sorted(p.relative_to(home).as_posix() for p in written)


def _write(target: Path, content: bytes | pl.DataFrame) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pl.DataFrame):
        content.write_parquet(target, compression="zstd")
    else:
        target.write_bytes(content)
    return target


# -- truth files -------------------------------------------------------------------------


def _stats(rows: pl.DataFrame) -> dict:
    fail = pl.col("true_verdict") == "fail"
    out = rows.select(
        turns=pl.len(), failure_rate=fail.mean(),
        thumbs_down_per_turn=(pl.col("thumbs") == "down").sum() / pl.len(),
        rated_share=pl.col("thumbs").is_not_null().mean(), escalation_rate=pl.col("escalated").mean(),
        mean_response_chars=pl.col("agent_response").str.len_chars().mean(),
        refusal_rate=pl.col("is_refusal").mean(), disclaimer_rate=pl.col("has_disclaimer").mean(),
        **{f"rate_{c}": (pl.col("true_failure_category") == c).fill_null(False).mean() for c in CATEGORIES},
    ).row(0, named=True)
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}


def _releases_report(world: pl.DataFrame, seed: int, first_week: date, weeks: int) -> dict:
    """What was planted and what it came out as in the written (valid) traces."""
    def week_of(offset: int) -> str:
        return (first_week + timedelta(weeks=offset)).isoformat()

    releases = []
    for r in RELEASES:
        if r.week_offset >= weeks:
            continue
        (new, _), (old, _) = _arms(r.agent_id, r.week_offset)[0], _arms(r.agent_id, r.week_offset - 1)[0]
        matched = pl.col("agent_id") == r.agent_id
        for d, value in zip(VERSION_DIMENSIONS, new.versions):
            if d != r.dimension:  # hold the other versions at what is live when the change lands
                matched &= pl.col(d) == value
        entry = {
            "release_id": r.release_id, "agent_id": r.agent_id, "dimension": r.dimension,
            "before": r.before, "after": r.after, "first_week": week_of(r.week_offset),
            "rollout": [{"week": week_of(r.week_offset + k), "share_after": share}
                        for k, share in enumerate(r.rollout) if r.week_offset + k < weeks],
            "expected_effect": r.expected_effect, "description": r.description,
            "true_failure_rate_before": round(sum(old.rates), 5), "true_failure_rate_after": round(sum(new.rates), 5),
            "true_category_rates_before": dict(zip(CATEGORIES, old.rates)),
            "true_category_rates_after": dict(zip(CATEGORIES, new.rates)),
            "concise_after": new.concise,
            "realized_before": _stats(world.filter(matched & (pl.col(r.dimension) == r.before))),
            "realized_after": _stats(world.filter(matched & (pl.col(r.dimension) == r.after))),
        }
        if r.rollout[0] < 1:
            ab_week = world.filter(matched & (pl.col("week") == first_week + timedelta(weeks=r.week_offset)))
            entry["ab_week"] = {"week": week_of(r.week_offset), **{
                arm: _stats(ab_week.filter(pl.col(r.dimension) == version))
                for arm, version in (("control", r.before), ("treatment", r.after))}}
        releases.append(entry)

    weekly, unchanged = [], []
    for agent_id in AGENTS:
        for w in range(weeks):
            arms = _arms(agent_id, w)
            rows = world.filter((pl.col("agent_id") == agent_id) & (pl.col("week") == first_week + timedelta(weeks=w)))
            weekly.append({"agent_id": agent_id, "week": week_of(w),
                           "live": [{"versions": dict(zip(VERSION_DIMENSIONS, s.versions)), "share": share,
                                     "true_failure_rate": round(sum(s.rates), 5)} for s, share in arms],
                           "realized": _stats(rows)})
            if w and arms == _arms(agent_id, w - 1):
                unchanged.append({"agent_id": agent_id, "week": week_of(w), "compared_to": week_of(w - 1)})
    rated = world.filter(pl.col("thumbs").is_not_null())
    aa = next((r for r in RELEASES if r.expected_effect == "none" and r.week_offset < weeks), None)
    null_agent, null_offset = NULL_AGENT_WEEK
    return {
        "seed": seed, "first_week": first_week.isoformat(), "weeks": weeks,
        "agents": {a: {"vertical": s.vertical, "versions": dict(zip(VERSION_DIMENSIONS, s.versions)),
                       "true_failure_rate": round(sum(s.category_rates), 5),
                       "true_category_rates": dict(zip(CATEGORIES, s.category_rates))} for a, s in AGENTS.items()},
        "releases": releases,
        "aa_null": None if aa is None else {"release_id": aa.release_id, "agent_id": aa.agent_id,
                                            "dimension": aa.dimension, "week": week_of(aa.week_offset)},
        "null_agent_week": None if null_offset >= weeks else {
            "agent_id": null_agent, "week": week_of(null_offset), "compared_to": week_of(null_offset - 1)},
        "unchanged_agent_weeks": unchanged,
        "weekly": weekly,
        "feedback": {
            **_stats(world),
            "rated_share_given_fail": round(world.filter(pl.col("true_verdict") == "fail")["thumbs"]
                                            .is_not_null().mean(), 5),
            "rated_share_given_pass": round(world.filter(pl.col("true_verdict") == "pass")["thumbs"]
                                            .is_not_null().mean(), 5),
            "down_share_of_ratings": round((rated["thumbs"] == "down").mean(), 5),
            "heavy_clicker_share_of_ratings": round(rated["heavy_clicker"].mean(), 5),
            "heavy_clicker_share_of_turns": round(world["heavy_clicker"].mean(), 5),
            "heavy_clicker_user_ids": sorted(world.filter("heavy_clicker")["user_id"].unique().to_list()),
        },
    }


def generate_world(home: Path, seed: int = 7, weeks: int = 8, first_week: date = DEMO_FIRST_WEEK,
                   turns_per_week: int = 20_000) -> dict:
    """Write the demo landing files and truth files under `home`; return what was written.

    Replaces home/landing/demo, home/landing/resend and home/demo_truth. Same seed, same bytes.
    """
    home = Path(home)
    world = _simulate(turns_per_week * weeks, seed, first_week, weeks, None)
    rng = np.random.default_rng([seed, first_week.toordinal(), weeks, 1])
    plan = pl.DataFrame(
        [{"week": first_week + timedelta(weeks=w), "agent_id": a, "file": _landing_file(
            first_week + timedelta(weeks=w), w, a), "week_offset": w} for w in range(weeks) for a in AGENTS],
        schema_overrides={"week": pl.Date})
    world = world.join(plan, on=["week", "agent_id"]).with_columns(file=pl.col("file").str.replace(
        "{part}", pl.when(pl.from_epoch("ts_ms", time_unit="ms").dt.weekday() <= 3).then(pl.lit("000"))
        .otherwise(pl.lit("001")), literal=True)).sort("file", "ts_ms", "trace_id").with_row_index("row")
    parquet = pl.col("file").str.ends_with(".parquet")
    world = world.with_columns(extra_field=pl.when(parquet).then(pl.col("week_offset") == 2)
                               .otherwise(pl.Series(rng.random(world.height) < 0.015)))

    for sub in ("landing/demo", "landing/resend", "demo_truth"):
        shutil.rmtree(home / sub, ignore_errors=True)
    lines, bad = _landing_lines(world, rng)
    files = _write_landing(home, world, lines, rng)
    valid = world.filter(~pl.col("row").is_in(pl.Series(bad, dtype=pl.UInt32)))
    truth_dir = home / "demo_truth"
    _write(truth_dir / "turn_truth.parquet", valid.select(TRUTH_COLUMNS).sort("trace_id"))
    log = lines.filter(pl.col("kind").is_not_null()).select(
        source_file="file", source_line="source_line", kind="kind", trace_id="trace_id")
    _write(truth_dir / "injected_records.parquet", log)
    report = _releases_report(valid, seed, first_week, weeks)
    (truth_dir / "releases.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    counts = dict(log.group_by("kind").len().iter_rows())
    return {
        "turns_written": valid.height,
        "records_written": valid.height + sum(counts.get(k, 0) for k in (
            *MALFORMED_KINDS, "exact_duplicate", "conflicting_duplicate")),
        "malformed_written": {k: counts.get(k, 0) for k in MALFORMED_KINDS},
        "duplicates_written": {"exact": counts.get("exact_duplicate", 0),
                               "conflicting": counts.get("conflicting_duplicate", 0)},
        "blank_lines_written": counts.get("blank_line", 0),
        "extra_field_records": int(valid["extra_field"].sum()),
        "files": files,
        "truth_files": ["demo_truth/injected_records.parquet", "demo_truth/releases.json",
                        "demo_truth/turn_truth.parquet"],
    }
