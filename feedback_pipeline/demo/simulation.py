"""Simulating the demo world's turns together with their hidden truth, in memory.

`simulate` draws conversations and turns (agent, week, live arm, intent, user,
failure and its category, feedback, tool calls, text, latency, timestamp) for the
scenario in `scenario`; `turns_and_truth` splits them into the landing-contract
shape and the truth. Writing files lives in `landing_files`, not here.
"""

from collections.abc import Sequence
from datetime import date, datetime, timezone

import numpy as np
import polars as pl

from feedback_pipeline.demo import world_text as wt
from feedback_pipeline.demo.draws import categorical, hex_ids, lookup, mix64
from feedback_pipeline.demo.feedback_and_tools import REASONS, THUMBS, feedback, tool_calls
from feedback_pipeline.demo.scenario import AGENTS, VERSION_DIMENSIONS, state_table
from feedback_pipeline.demo.world_text import CATEGORIES, PASS
from feedback_pipeline.ingest.contract import KNOWN_TOP_LEVEL_FIELDS, SOURCE_FIELDS

# A demo turn has every contract field but the optional ones naming a converted source.
TURN_COLUMNS = tuple(f for f in KNOWN_TOP_LEVEL_FIELDS if f not in SOURCE_FIELDS)
TRUTH_COLUMNS = ("trace_id", "agent_id", "week", "true_verdict", "true_failure_category")
_WEEK_MS = 7 * 86_400_000
_CONVERSATION_SIGMA = 1.0  # sd of the conversation random effect on the failure log-odds
_HEAVY_CLICKERS_PER_AGENT = 8
_TIMEZONES = (("Z", 0, .55), ("+01:00", 60, .12), ("+02:00", 120, .10), ("-04:00", -240, .08),
              ("-05:00", -300, .08), ("+05:30", 330, .04), ("+10:00", 600, .03))
_HOURLY = np.array([.2, .15, .1, .1, .1, .15, .3, .5, .8, 1, 1, 1, 1, 1, 1, 1, 1, .95, .9, .8, .7, .6, .45, .3])
_DAILY = np.array([1, 1, 1, 1, 1, .75, .7])
_CATEGORIES = pl.Series([None, *CATEGORIES], dtype=pl.String)


def intercept(target: float, difficulty: np.ndarray, weight: np.ndarray) -> float:
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


def start_times(rng: np.random.Generator, n_conv: int) -> np.ndarray:
    """Conversation start, in ms after the week's Monday 00:00 UTC: quieter nights and weekends."""
    return (categorical(rng, _DAILY / _DAILY.sum(), 0, n_conv) * 86_400_000
            + categorical(rng, _HOURLY / _HOURLY.sum(), 0, n_conv) * 3_600_000
            + rng.integers(0, 3_600_000, n_conv))


def simulate(n_turns: int, seed: int, first_week: date, weeks: int,
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
    lengths = 1 + categorical(rng, np.array([.34, .24, .17, .12, .08, .05]), 0, max(n_turns, 1))
    ends = np.cumsum(lengths)
    n_conv = int(np.searchsorted(ends, n_turns)) + 1 if n_turns else 0
    lengths = lengths[:n_conv].copy()
    if n_conv:
        lengths[-1] -= ends[n_conv - 1] - n_turns

    # States (configurations live per agent-week) and their calibrated failure intercepts.
    states, arm_state, arm_share = state_table(weeks)
    difficulty = np.array([i.difficulty for _, i in intents])
    intent_weight = np.zeros((len(names), len(intents)))
    for g, (agent_id, intent) in enumerate(intents):
        intent_weight[names.index(agent_id), g] = intent.weight
    intent_weight /= intent_weight.sum(1, keepdims=True)
    alpha = np.array([intercept(sum(s.rates), difficulty, intent_weight[s.agent]) for s in states])
    category_mix = np.array([np.array(s.rates) / sum(s.rates) for s in states])

    # Per conversation: agent, week, arm, intent, channel, user, time zone, random effect.
    share = np.array([AGENTS[a].share if a in chosen else 0.0 for a in names])
    c_agent = categorical(rng, share / share.sum(), 0, n_conv)
    week_weight = 1 + 0.04 * rng.standard_normal(weeks)
    c_week = categorical(rng, week_weight / week_weight.sum(), 0, n_conv)
    c_state = np.where(rng.random(n_conv) < arm_share[c_agent, c_week],
                       arm_state[c_agent, c_week, 0], arm_state[c_agent, c_week, 1])
    c_intent = categorical(rng, intent_weight, c_agent, n_conv)
    channel_names = sorted({c for s in AGENTS.values() for c, _ in s.channels})
    channel_p = np.array([[dict(AGENTS[a].channels).get(c, 0.0) for c in channel_names] for a in names])
    c_channel = categorical(rng, channel_p, c_agent, n_conv)
    c_heavy = rng.random(n_conv) < 0.015  # heavy clickers: few users, many ratings
    pool = np.maximum(20, (n_conv * share / share.sum() / 1.6).astype(np.int64))
    regular = (pool[c_agent] * rng.random(n_conv) ** 1.6).astype(np.uint64)
    heavy = rng.integers(0, _HEAVY_CLICKERS_PER_AGENT, n_conv).astype(np.uint64)
    user_num = (c_agent.astype(np.uint64) << np.uint64(40)) + np.where(
        c_heavy, (np.uint64(1) << np.uint64(36)) + heavy, regular)
    user_hash = mix64(user_num ^ id_key)
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
    category = np.where(fail, categorical(rng, category_mix, state, n_turns), PASS)
    fb = feedback(rng, fail, category, concise, c_heavy[conv], turn_index == lengths[conv] - 1)
    prev_rewrote = np.concatenate([[False], fb["rewrote"][:-1]]) & (turn_index > 0)
    calls, n_calls, tool_latency = tool_calls(rng, intent, category)
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
    start = np.minimum(start_times(rng, n_conv), _WEEK_MS - 1_000 - duration)
    week_start = int(datetime.combine(first_week, datetime.min.time(), timezone.utc).timestamp() * 1000)
    ts_ms = week_start + c_week[conv].astype(np.int64) * _WEEK_MS + start[conv] + offset
    tz = c_tz[conv]

    frame = pl.DataFrame({
        "trace_id": hex_ids("tr_", mix64(np.arange(n_turns, dtype=np.uint64) ^ id_key)),
        "conversation_id": hex_ids("cv_", mix64(np.arange(n_conv, dtype=np.uint64) ^ ~id_key)).gather(conv),
        "turn_index": turn_index.astype(np.int64),
        "ts_ms": ts_ms,
        "tz_minutes": np.array([m for _, m, _ in _TIMEZONES])[tz],
        "tz_suffix": lookup([s for s, _, _ in _TIMEZONES], tz),
        "agent_id": lookup(names, agent),
        "vertical": lookup([AGENTS[a].vertical for a in names], agent),
        "channel": lookup(channel_names, c_channel[conv]),
        "intent": lookup([i.name for _, i in intents], intent),
        "user_id": hex_ids("u_", user_hash, 12).gather(conv),
        "user_message": text["user_message"],
        "agent_response": text["agent_response"],
        "tool_calls": calls,
        "latency_ms": latency,
        **{d: lookup([s.versions[k] for s in states], state) for k, d in enumerate(VERSION_DIMENSIONS)},
        "thumbs": THUMBS.gather(fb["thumbs"]),
        "escalated": fb["escalated"],
        "escalation_reason": REASONS.gather(fb["reason"]),
        "user_rewrote": fb["rewrote"],
        "week": (np.datetime64(first_week, "D") + 7 * c_week[conv]).astype("datetime64[D]"),
        "true_verdict": lookup(("pass", "fail"), fail),
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



def turn_record() -> list[pl.Expr]:
    """The landing-contract columns of a simulated turn, its feedback fields nested."""
    feedback_struct = pl.struct("thumbs", "escalated", "escalation_reason", "user_rewrote").alias("feedback")
    return [feedback_struct if c == "feedback" else pl.col(c) for c in TURN_COLUMNS]


def turns_and_truth(world: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(turns in the landing-contract shape, their truth) of simulated rows."""
    return world.select(turn_record()), world.select(TRUTH_COLUMNS)
