"""Which `automated_scores` rows form the before and after sides of one change.

**Windows** (`window_plan`, the rule reported in `window`):
- concurrent: arm A (before_version) vs arm B (after_version) rows *within the
  same weeks*, the first up to WINDOW_WEEKS weeks where both are live. A
  same-period comparison is free of seasonality and of other weeks' mix shifts.
- sequential: before = before_version rows in its last up to WINDOW_WEEKS
  consecutive live weeks before the change week; after = after_version rows in
  the first up to WINDOW_WEEKS consecutive live weeks from the change week.
- Both: the other two dimensions are held at the values live when the change
  lands (the most common among the new version's rows in its first window
  week), so that a neighbouring change of another dimension does not leak in. If
  the before side has no row with that value (two dimensions changed at once),
  the dimension is not held and the plan's notes say the change is confounded.
Statistics over the sides live in `compare.py`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from feedback_pipeline.impact.declared import DIMENSIONS
from feedback_pipeline.impact.versions import after_run, timeline, version_shares

WINDOW_WEEKS = 2


@dataclass(frozen=True)
class WindowPlan:
    """Which weeks and rows each side of a change's comparison uses (see module docstring)."""

    design: str  # "concurrent" or "sequential"
    before_weeks: tuple[date, ...]
    after_weeks: tuple[date, ...]
    held: dict[str, str | None] = field(default_factory=dict)  # other dimensions held fixed
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        def weeks(ws: tuple[date, ...]) -> str:
            return ",".join(w.isoformat() for w in ws) or "none"

        if self.design == "concurrent":
            text = f"concurrent arms in {weeks(self.after_weeks)}"
        else:
            text = f"before {weeks(self.before_weeks)} vs after {weeks(self.after_weeks)}"
        held = ", ".join(f"{d}={v}" for d, v in self.held.items())
        return text + (f"; held {held}" if held else "")


def window_plan(change: Mapping | pl.DataFrame, scores: pl.DataFrame) -> WindowPlan:
    """The comparison windows of one change (a `detect_changes` row) over `scores`."""
    change = as_change(change)
    agent_id, dimension, week = change["agent_id"], change["dimension"], change["change_week"]
    before, after = change["before_version"], change["after_version"]
    rows = scores.filter(pl.col("agent_id") == agent_id)
    shares = version_shares(rows.select("agent_id", "week", *DIMENSIONS)).filter(pl.col("dimension") == dimension)
    history = timeline(shares, sorted(rows["week"].unique().to_list()), before, after)
    run = after_run(history, week)
    both = [t["week"] for t in run if t["live_before"]][:WINDOW_WEEKS]
    if both:
        design, before_weeks, after_weeks = "concurrent", tuple(both), tuple(both)
    else:
        earlier = []
        for t in reversed([t for t in history if t["week"] < week]):
            if not t["live_before"] or len(earlier) == WINDOW_WEEKS:
                break
            earlier.insert(0, t["week"])
        design, before_weeks = "sequential", tuple(earlier)
        after_weeks = tuple(t["week"] for t in run[:WINDOW_WEEKS])
    notes = []
    if not before_weeks or not after_weeks:
        notes.append(f"no live weeks for the {'before' if not before_weeks else 'after'} side")
    held = {}
    first = rows.filter((pl.col(dimension) == after) & (pl.col("week") == (after_weeks or (week,))[0]))
    before_rows = rows.filter((pl.col(dimension) == before) & pl.col("week").is_in(before_weeks))
    for other in (d for d in DIMENSIONS if d != dimension and first.height):
        value = first[other].mode().sort(nulls_last=True)[0]
        if before_rows.filter(pl.col(other).eq_missing(value)).height:
            held[other] = value
        elif before_rows.height:
            was = before_rows[other].mode().sort(nulls_last=True)[0]
            notes.append(f"confounded: {other} also changed ({was} -> {value})")
    return WindowPlan(design, before_weeks, after_weeks, held, tuple(notes))


def comparison_windows(change: Mapping | pl.DataFrame, scores: pl.DataFrame,
                       plan: WindowPlan | None = None) -> pl.DataFrame:
    """The `scores` rows of the change's comparison, with `side` ("before" or "after")."""
    change = as_change(change)
    plan = plan or window_plan(change, scores)
    dimension = change["dimension"]
    held = [pl.col(d).eq_missing(pl.lit(v, pl.String)) for d, v in plan.held.items()]
    side = (
        pl.when((pl.col(dimension) == change["before_version"]) & pl.col("week").is_in(plan.before_weeks))
        .then(pl.lit("before"))
        .when((pl.col(dimension) == change["after_version"]) & pl.col("week").is_in(plan.after_weeks))
        .then(pl.lit("after"))
    )
    return (
        scores.filter(pl.col("agent_id") == change["agent_id"], *held)
        .with_columns(side=side).filter(pl.col("side").is_not_null())
    )


def as_change(change: Mapping | pl.DataFrame) -> dict:
    """A change as a dict, from a mapping or a one-row frame."""
    if isinstance(change, pl.DataFrame):
        if change.height != 1:
            raise ValueError(f"expected one change row, got {change.height}")
        return change.row(0, named=True)
    return dict(change)
