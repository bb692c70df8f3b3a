"""Release changes: which version changes happened per agent, and which rows compare them.

Pure functions over Polars frames (no Dagster): `release_changes` calls
`detect_changes` (with `read_declared_changes` of the home folder's file), and
`impact_metrics` calls `comparison_windows` through `stats.compare_change`.
Statistics live in `stats.py`.

**Detection.** Per agent and dimension (prompt_version, retrieval_version, model),
a version is *live* in a week when it has ≥ LIVE_MIN_SHARE of the agent's turns
and ≥ LIVE_MIN_TURNS of them (so stragglers do not count). A change is a version
that is live in a week but was not live in the agent's previous observed week;
its `before_version` is the version with the largest share in that previous week
(a rollback shows up as a change back). `concurrent`: both versions live in one
week of the new version's first run of live weeks (A/B test or canary rollout).

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
"""

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import yaml

DIMENSIONS: tuple[str, ...] = ("prompt_version", "retrieval_version", "model")
LIVE_MIN_SHARE = 0.01
LIVE_MIN_TURNS = 20
FULL_ROLLOUT_SHARE = 0.95
WINDOW_WEEKS = 2

DECLARED_FIELDS: tuple[str, ...] = (
    "agent_id", "dimension", "before_version", "after_version", "effective_week", "description",
)
DECLARED_SCHEMA: dict[str, pl.DataType] = {
    "agent_id": pl.String, "dimension": pl.String, "before_version": pl.String,
    "after_version": pl.String, "effective_week": pl.Date, "description": pl.String,
}
SHARE_DTYPE = pl.List(pl.Struct({"week": pl.Date, "share": pl.Float64}))
# change_id: "<agent>/<dimension>/<before>-><after>@<change_week>" (stable across re-runs).
# change_week: the first week the new version is live (declared-only: effective_week).
# *_first_seen/*_last_seen: weeks with any row of the version for the agent.
# after_share_by_week: the new version's share of the agent's turns, every week from change_week.
# rollout_weeks: weeks from change_week to the first week at ≥ FULL_ROLLOUT_SHARE, inclusive
# (1 = switched at once); null if it never got there in its first run of live weeks.
CHANGE_SCHEMA: dict[str, pl.DataType] = {
    "change_id": pl.String, "agent_id": pl.String, "dimension": pl.String,
    "before_version": pl.String, "after_version": pl.String, "change_week": pl.Date,
    "before_first_seen": pl.Date, "before_last_seen": pl.Date,
    "after_first_seen": pl.Date, "after_last_seen": pl.Date,
    "after_share_by_week": SHARE_DTYPE, "concurrent": pl.Boolean, "rollout_weeks": pl.Int64,
    "detected": pl.Boolean, "declared": pl.Boolean, "effective_week": pl.Date,
    "description": pl.String, "notes": pl.String,
}


class DeclaredChangesError(ValueError):
    """A declared-changes file that cannot be used; `problems` lists every fault found."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(f"declared changes file {path}:\n  " + "\n  ".join(problems))


# -- declared changes ----------------------------------------------------------------------


def read_declared_changes(path: str | Path) -> pl.DataFrame:
    """Manually declared changes (DECLARED_SCHEMA) from a .csv or .yaml/.yml file.

    CSV: a header row with DECLARED_FIELDS (description optional). YAML: a list of mappings with those
    keys (or {"changes": [...]}). `description` may be empty; every other field
    is required, `effective_week` is the ISO date of the Monday the change went
    live. Every fault is reported at once, naming the file, row and field.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        entries, problems = _csv_entries(text)
    elif suffix in (".yaml", ".yml"):
        entries, problems = _yaml_entries(text)
    else:
        raise DeclaredChangesError(path, [f"unknown format {suffix!r}: use .csv, .yaml or .yml"])
    rows, seen = [], {}
    for where, entry in entries:
        row, faults = _check_entry(entry)
        problems += [f"{where}, {f}" for f in faults]
        if row is None:
            continue
        key = tuple(row[k] for k in DECLARED_FIELDS[:5])
        if key in seen:
            problems.append(f"{where}: duplicates {seen[key]}")
        seen.setdefault(key, where)
        rows.append(row)
    if problems:
        raise DeclaredChangesError(path, problems)
    return pl.DataFrame(rows, schema=DECLARED_SCHEMA)


def _csv_entries(text: str) -> tuple[list[tuple[str, dict]], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [f for f in DECLARED_FIELDS[:5] if f not in header]  # description may be left out
    unknown = [f for f in header if f not in DECLARED_FIELDS]
    problems = [f"header: missing column {f!r}" for f in missing]
    problems += [f"header: unknown column {f!r} (allowed: {', '.join(DECLARED_FIELDS)})" for f in unknown]
    if problems:
        return [], problems
    entries = []
    for i, record in enumerate(reader, start=1):
        if None in record:  # more cells than header columns
            problems.append(f"row {i} (line {reader.line_num}): {len(record[None])} cells beyond the header")
            continue
        entries.append((f"row {i} (line {reader.line_num})", record))
    return entries, problems


def _yaml_entries(text: str) -> tuple[list[tuple[str, dict]], list[str]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [], [f"not valid YAML: {e}"]
    if isinstance(data, dict) and set(data) == {"changes"}:
        data = data["changes"]
    if data is None:
        return [], []
    if not isinstance(data, list):
        return [], ["expected a list of changes (or a mapping with the single key 'changes')"]
    entries, problems = [], []
    for i, entry in enumerate(data, start=1):
        if not isinstance(entry, dict):
            problems.append(f"entry {i}: expected a mapping with keys {', '.join(DECLARED_FIELDS)}")
            continue
        unknown = [k for k in entry if k not in DECLARED_FIELDS]
        problems += [f"entry {i}, field {k!r}: unknown (allowed: {', '.join(DECLARED_FIELDS)})" for k in unknown]
        entries.append((f"entry {i}", entry))
    return entries, problems


def _check_entry(entry: Mapping) -> tuple[dict | None, list[str]]:
    row, faults = {}, []
    for f in DECLARED_FIELDS:
        value = entry.get(f)
        text = value.strip() if isinstance(value, str) else value
        if text in (None, ""):
            if f != "description":
                faults.append(f"field {f}: missing or empty")
            row[f] = None
        elif f == "effective_week":
            row[f], fault = _monday(text)
            faults += [f"field effective_week: {fault}"] if fault else []
        else:
            row[f] = str(text)
    if row["dimension"] is not None and row["dimension"] not in DIMENSIONS:
        faults.append(f"field dimension: {row['dimension']!r} is not one of {', '.join(DIMENSIONS)}")
    if row["before_version"] is not None and row["before_version"] == row["after_version"]:
        faults.append(f"field after_version: equals before_version ({row['after_version']!r})")
    return (None if faults else row), faults


def _monday(value: object) -> tuple[date | None, str | None]:
    if isinstance(value, date):
        day = value
    else:
        try:
            day = date.fromisoformat(str(value))
        except ValueError:
            return None, f"{value!r} is not an ISO date (YYYY-MM-DD)"
    if day.weekday() != 0:
        monday = day - timedelta(days=day.weekday())
        return None, f"{day.isoformat()} is a {day:%A}; weeks start on Monday (use {monday.isoformat()})"
    return day, None


# -- detection -----------------------------------------------------------------------------


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


def detect_changes(scores: pl.DataFrame, declared: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every version change per agent and dimension (CHANGE_SCHEMA), detected or declared.

    scores: rows with week, agent_id and DIMENSIONS (e.g. `automated_scores`).
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
        match = [r for r in rows if all(r[k] == d[k] for k in DECLARED_FIELDS[:4])]
        if match:
            row = min(match, key=lambda r: abs((r["change_week"] - d["effective_week"]).days))
            row.update(declared=True, effective_week=d["effective_week"], description=d["description"])
            continue
        event = {k: d[k] for k in DECLARED_FIELDS[:4]} | {"change_week": d["effective_week"]}
        rows.append(_describe(event, shares, weeks) | {
            "detected": False, "declared": True, "effective_week": d["effective_week"],
            "description": d["description"], "notes": "declared, not detected in traffic"})
    return pl.DataFrame(rows, schema=CHANGE_SCHEMA).sort("agent_id", "change_week", "dimension", "change_id")


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
    timeline = _timeline(mine, weeks.get(agent_id, []), event["before_version"], event["after_version"])
    run = _after_run(timeline, week)
    full = [i for i, t in enumerate(run) if t["share_after"] >= FULL_ROLLOUT_SHARE]
    change_id = f"{agent_id}/{dimension}/{event['before_version']}->{event['after_version']}@{week.isoformat()}"
    return event | seen | {
        "change_id": change_id,
        "after_share_by_week": [{"week": t["week"], "share": t["share_after"]}
                                for t in timeline if t["week"] >= week],
        "concurrent": any(t["live_before"] for t in run),
        "rollout_weeks": full[0] + 1 if full else None,
        "effective_week": None, "description": None, "notes": None,
    }


def _timeline(mine: pl.DataFrame, weeks: list[date], before: str, after: str) -> list[dict]:
    """Per observed week of the agent: share and live flag of the before and after versions."""
    by = {(w, v): (s, live) for w, v, s, live in mine.select("week", "version", "share", "live").iter_rows()}
    out = []
    for w in weeks:
        (sb, lb), (sa, la) = by.get((w, before), (0.0, False)), by.get((w, after), (0.0, False))
        out.append({"week": w, "share_before": sb, "live_before": lb, "share_after": sa, "live_after": la})
    return out


def _after_run(timeline: list[dict], week: date) -> list[dict]:
    """The new version's consecutive live weeks from the change week."""
    run = []
    for t in (t for t in timeline if t["week"] >= week):
        if not t["live_after"]:
            break
        run.append(t)
    return run


# -- comparison windows --------------------------------------------------------------------


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
    timeline = _timeline(shares, sorted(rows["week"].unique().to_list()), before, after)
    run = _after_run(timeline, week)
    both = [t["week"] for t in run if t["live_before"]][:WINDOW_WEEKS]
    if both:
        design, before_weeks, after_weeks = "concurrent", tuple(both), tuple(both)
    else:
        earlier = []
        for t in reversed([t for t in timeline if t["week"] < week]):
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
