"""The releases report (demo_truth/releases.json): what was planted, and what it came to.

Per release, per agent-week and over all feedback: the true rates planted in
`scenario` next to the rates realized in the written (valid) traces, so tests and the
demo can check the pipeline's estimates against them. Nothing here draws or writes.
"""

from datetime import date, timedelta

import polars as pl

from feedback_pipeline.demo.scenario import AGENTS, NULL_AGENT_WEEK, RELEASES, VERSION_DIMENSIONS, arms
from feedback_pipeline.demo.world_text import CATEGORIES


def realized_stats(rows: pl.DataFrame) -> dict:
    """Rates and feedback shares over simulated rows, rounded to 5 decimals."""
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


def releases_report(world: pl.DataFrame, seed: int, first_week: date, weeks: int) -> dict:
    """What was planted and what it came out as in the written (valid) traces."""
    def week_of(offset: int) -> str:
        return (first_week + timedelta(weeks=offset)).isoformat()

    releases = []
    for r in RELEASES:
        if r.week_offset >= weeks:
            continue
        (new, _), (old, _) = arms(r.agent_id, r.week_offset)[0], arms(r.agent_id, r.week_offset - 1)[0]
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
            "realized_before": realized_stats(world.filter(matched & (pl.col(r.dimension) == r.before))),
            "realized_after": realized_stats(world.filter(matched & (pl.col(r.dimension) == r.after))),
        }
        if r.rollout[0] < 1:
            ab_week = world.filter(matched & (pl.col("week") == first_week + timedelta(weeks=r.week_offset)))
            entry["ab_week"] = {"week": week_of(r.week_offset), **{
                arm: realized_stats(ab_week.filter(pl.col(r.dimension) == version))
                for arm, version in (("control", r.before), ("treatment", r.after))}}
        releases.append(entry)

    weekly, unchanged = [], []
    for agent_id in AGENTS:
        for w in range(weeks):
            live = arms(agent_id, w)
            rows = world.filter((pl.col("agent_id") == agent_id) & (pl.col("week") == first_week + timedelta(weeks=w)))
            weekly.append({"agent_id": agent_id, "week": week_of(w),
                           "live": [{"versions": dict(zip(VERSION_DIMENSIONS, s.versions)), "share": share,
                                     "true_failure_rate": round(sum(s.rates), 5)} for s, share in live],
                           "realized": realized_stats(rows)})
            if w and live == arms(agent_id, w - 1):
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
            **realized_stats(world),
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
