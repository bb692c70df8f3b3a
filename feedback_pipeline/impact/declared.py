"""Declared changes: the home folder's `changes.yaml` / `changes.csv`, read and checked.

A team declares a change traffic cannot show (or names and describes one it can): agent,
dimension, versions, the Monday it went live. Every fault is reported at once, naming the
file, row and field (`DeclaredChangesError`). Matching declared to detected changes lives
in `detect.py`.
"""

import csv
import io
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import polars as pl

from feedback_pipeline.weeks import monday_of

DIMENSIONS: tuple[str, ...] = ("prompt_version", "retrieval_version", "model")
DECLARED_FILES = ("changes.yaml", "changes.yml", "changes.csv")  # looked for in this order
DECLARED_SCHEMA: dict[str, pl.DataType] = {
    "agent_id": pl.String, "dimension": pl.String, "before_version": pl.String,
    "after_version": pl.String, "effective_week": pl.Date, "description": pl.String,
}
DECLARED_FIELDS: tuple[str, ...] = tuple(DECLARED_SCHEMA)
REQUIRED_FIELDS = DECLARED_FIELDS[:5]  # description may be left out


class DeclaredChangesError(ValueError):
    """A declared-changes file that cannot be used; `problems` lists every fault found."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__(f"declared changes file {path}:\n  " + "\n  ".join(problems))


def declared_file(root: Path) -> Path | None:
    """The home folder's declared-changes file (DECLARED_FILES order), if there is one."""
    return next((root / name for name in DECLARED_FILES if (root / name).exists()), None)


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
        key = tuple(row[k] for k in REQUIRED_FIELDS)
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
    missing = [f for f in REQUIRED_FIELDS if f not in header]
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
    import yaml  # only when a YAML file is declared

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
        return None, f"{day.isoformat()} is a {day:%A}; weeks start on Monday (use {monday_of(day).isoformat()})"
    return day, None
