"""What the demo world is made of: its agents, their versions, and the planted releases.

Holds the agent specs (traffic share, versions, true failure rates per category), the
releases planted in their weeks, and which configurations (arms) are live per
agent-week. How turns are drawn from that lives in `simulation`; what the releases
came out as lives in `releases_report`.
"""

from dataclasses import dataclass

import numpy as np

from feedback_pipeline.demo import world_text as wt

VERSION_DIMENSIONS = ("prompt_version", "retrieval_version", "model")


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


@dataclass(frozen=True)
class State:
    """One live configuration of an agent: its versions and true failure rates."""

    agent: int
    versions: tuple[str, str, str]
    rates: tuple[float, ...]
    concise: bool


def arms(agent_id: str, week: int) -> list[tuple[State, float]]:
    """The configurations live for an agent in a week, with their share of conversations."""
    spec, agent = AGENTS[agent_id], wt.AGENT_ORDER.index(agent_id)
    state = State(agent, spec.versions, spec.category_rates, False)
    live = [(state, 1.0)]
    for r in sorted((r for r in RELEASES if r.agent_id == agent_id), key=lambda r: r.week_offset):
        if r.week_offset > week:
            continue
        share = r.rollout[min(week - r.week_offset, len(r.rollout) - 1)]
        versions = list(state.versions)
        versions[VERSION_DIMENSIONS.index(r.dimension)] = r.after
        new = State(agent, tuple(versions), r.category_rates_after or state.rates,
                    state.concise or r.concise_after)
        live = [(new, 1.0)] if share >= 1 else [(new, share), (state, 1 - share)]
        state = new
    return live


def state_table(weeks: int) -> tuple[list[State], np.ndarray, np.ndarray]:
    """Distinct states, and per (agent, week) the state of arm 0 / arm 1 and arm 0's share."""
    states: list[State] = []
    arm_state = np.zeros((len(AGENTS), weeks, 2), dtype=np.int64)
    arm_share = np.ones((len(AGENTS), weeks))
    for a, agent_id in enumerate(AGENTS):
        for w in range(weeks):
            live = arms(agent_id, w)
            for state, _ in live:
                if state not in states:
                    states.append(state)
            arm_state[a, w] = [states.index(live[0][0]), states.index(live[-1][0])]
            arm_share[a, w] = live[0][1]
    return states, arm_state, arm_share
