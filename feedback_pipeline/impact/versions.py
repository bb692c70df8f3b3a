"""Which version of a dimension is live in which week, per agent: the ground both change
detection (`detect.py`) and the comparison windows (`windows.py`) stand on.

A version is *live* in a week when it has ≥ LIVE_MIN_SHARE of the agent's turns and
≥ LIVE_MIN_TURNS of them (so stragglers do not count).
"""

from datetime import date

import polars as pl

from feedback_pipeline.impact.declared import DIMENSIONS

LIVE_MIN_SHARE = 0.01
LIVE_MIN_TURNS = 20


def version_shares(scores: pl.DataFrame) -> pl.DataFrame:
    """Per agent, dimension, week and version: turns, share of the agent-week's turns, live."""
    totals = scores.group_by("agent_id", "week").agg(total=pl.len())
    long = scores.select("agent_id", "week", *DIMENSIONS).unpivot(
        index=["agent_id", "week"], on=list(DIMENSIONS), variable_name="dimension", value_name="version")
    return (
        long.drop_nulls("version").group_by("agent_id", "dimension", "week", "version").agg(turns=pl.len())
        .join(totals, on=["agent_id", "week"])
        .with_columns(share=pl.col("turns") / pl.col("total"))
        .with_columns(live=(pl.col("share") >= LIVE_MIN_SHARE) & (pl.col("turns") >= LIVE_MIN_TURNS))
        .sort("agent_id", "dimension", "week", "version")
    )


def timeline(mine: pl.DataFrame, weeks: list[date], before: str, after: str) -> list[dict]:
    """Per observed week of the agent: share and live flag of the before and after versions
    (`mine`: the agent's and dimension's `version_shares` rows)."""
    by = {(w, v): (s, live) for w, v, s, live in mine.select("week", "version", "share", "live").iter_rows()}
    out = []
    for w in weeks:
        (sb, lb), (sa, la) = by.get((w, before), (0.0, False)), by.get((w, after), (0.0, False))
        out.append({"week": w, "share_before": sb, "live_before": lb, "share_after": sa, "live_after": la})
    return out


def after_run(weeks: list[dict], week: date) -> list[dict]:
    """The new version's consecutive live weeks from the change week (`timeline` entries)."""
    run = []
    for t in (t for t in weeks if t["week"] >= week):
        if not t["live_after"]:
            break
        run.append(t)
    return run
