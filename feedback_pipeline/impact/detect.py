"""Release changes: every version change per agent and dimension seen in traffic or declared.

A change is a version that is live (`versions.py`) in a week but was not live in the
agent's previous observed week; its `before_version` is the version with the largest
share in that previous week (a rollback shows up as a change back). `concurrent`: both
versions live in one week of the new version's first run of live weeks (A/B test or
canary rollout). `rollout_weeks`: weeks from change_week to the first week at
≥ FULL_ROLLOUT_SHARE, inclusive (1 = switched at once; null if it never got there in its
first run of live weeks). Reading the declared file lives in `declared.py`; which rows
compare a change in `windows.py`.
"""

from datetime import date

import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.impact.declared import DECLARED_FIELDS
from feedback_pipeline.impact.schemas import ReleaseChanges
from feedback_pipeline.impact.versions import after_run, timeline, version_shares

FULL_ROLLOUT_SHARE = 0.95
_MATCH_FIELDS = DECLARED_FIELDS[:4]  # agent, dimension, before and after version


def detect_changes(scores: pl.DataFrame, declared: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every version change per agent and dimension (the `ReleaseChanges` table), detected or declared.

    scores: rows with week, agent_id and the dimensions (e.g. `automated_scores`).
    declared: `read_declared_changes` output; a declared change matching a detected
    one (agent, dimension, versions; the nearest change week) marks it declared and
    adds the description; one not seen in traffic becomes its own row (change_week =
    effective_week, detected false) so that nothing declared is dropped.
    """
    shares = version_shares(scores)
    weeks = _agent_weeks(scores)
    events = []
    for (agent_id, dimension), group in shares.filter("live").group_by("agent_id", "dimension"):
        live: dict[date, dict[str, float]] = {}
        for week, version, share in group.select("week", "version", "share").iter_rows():
            live.setdefault(week, {})[version] = share
        for previous, week in zip(weeks[agent_id], weeks[agent_id][1:]):
            before, now = live.get(previous, {}), live.get(week, {})
            for version in sorted(set(now) - set(before)):
                if before:  # a version live in the agent's first observed week has nothing to compare to
                    old = max(before, key=lambda v: (before[v], v))
                    events.append({"agent_id": agent_id, "dimension": dimension, "before_version": old,
                                   "after_version": version, "change_week": week})
    rows = [_describe(e, shares, weeks) | {"detected": True, "declared": False} for e in events]
    for d in (declared.iter_rows(named=True) if declared is not None else ()):
        match = [r for r in rows if all(r[k] == d[k] for k in _MATCH_FIELDS)]
        if match:
            row = min(match, key=lambda r: abs((r["change_week"] - d["effective_week"]).days))
            row.update(declared=True, effective_week=d["effective_week"], description=d["description"])
            continue
        event = {k: d[k] for k in _MATCH_FIELDS} | {"change_week": d["effective_week"]}
        rows.append(_describe(event, shares, weeks) | {
            "detected": False, "declared": True, "effective_week": d["effective_week"],
            "description": d["description"], "notes": "declared, not detected in traffic"})
    return (pl.DataFrame(rows, schema=polars_schema(ReleaseChanges))
            .sort("agent_id", "change_week", "dimension", "change_id"))


def _agent_weeks(scores: pl.DataFrame) -> dict[str, list[date]]:
    frame = scores.group_by("agent_id").agg(pl.col("week").unique().sort())
    return dict(frame.iter_rows())


def _describe(event: dict, shares: pl.DataFrame, weeks: dict[str, list[date]]) -> dict:
    """A change row's seen-weeks, share timeline, concurrency and rollout length."""
    agent_id, dimension, week = event["agent_id"], event["dimension"], event["change_week"]
    mine = shares.filter((pl.col("agent_id") == agent_id) & (pl.col("dimension") == dimension))
    seen = {}
    for side in ("before", "after"):
        w = mine.filter(pl.col("version") == event[f"{side}_version"])["week"]
        seen |= {f"{side}_first_seen": w.min(), f"{side}_last_seen": w.max()}
    history = timeline(mine, weeks.get(agent_id, []), event["before_version"], event["after_version"])
    run = after_run(history, week)
    full = [i for i, t in enumerate(run) if t["share_after"] >= FULL_ROLLOUT_SHARE]
    change_id = f"{agent_id}/{dimension}/{event['before_version']}->{event['after_version']}@{week.isoformat()}"
    return event | seen | {
        "change_id": change_id,
        "after_share_by_week": [{"week": t["week"], "share": t["share_after"]}
                                for t in history if t["week"] >= week],
        "concurrent": any(t["live_before"] for t in run),
        "rollout_weeks": full[0] + 1 if full else None,
        "effective_week": None, "description": None, "notes": None,
    }
