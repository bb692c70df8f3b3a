"""A snapshot's manifest: its content hash, size and counts, as a JSON-ready dict (the
`manifest.json` of its folder) and as `eval_set_manifests` rows.

Describes rows it is given; building them is `snapshot.py`, writing them `exports.py`.
"""

from datetime import date, datetime

import polars as pl

from feedback_pipeline.evalset.canonical import HASH_SCHEME, content_hash
from feedback_pipeline.evalset.schemas import EvalSetManifests, EvalSetSnapshots
from feedback_pipeline.frames import conform, polars_schema
from feedback_pipeline.weeks import week_start


def manifest(snapshot_rows: pl.DataFrame, created_at: datetime, *, agent_id: str | None = None,
             week: date | str | None = None) -> dict:
    """JSON-ready description of one snapshot (agent_id/week needed only when it has no rows)."""
    rows = conform(snapshot_rows, EvalSetSnapshots)
    agent_id = agent_id or (rows["agent_id"][0] if rows.height else None)
    week = week_start(week).date() if week is not None else (rows["week"][0] if rows.height else None)
    if agent_id is None or week is None:
        raise ValueError("an empty snapshot needs agent_id and week to describe it")
    if rows.height and (rows["agent_id"].n_unique() > 1 or rows["week"].n_unique() > 1
                        or rows["case_id"].n_unique() < rows.height):
        raise ValueError("a snapshot holds one agent, one week and each case_id once")
    by_cat = rows.group_by("verdict", "failure_category").len("n_cases").sort(
        "verdict", "failure_category", nulls_last=True)
    return {
        "snapshot_id": f"{agent_id}@{week}", "agent_id": agent_id, "week": week.isoformat(),
        "content_hash": content_hash(rows), "hash_scheme": HASH_SCHEME, "n_cases": rows.height,
        "n_canary": int(rows["canary"].sum()),
        "counts_by_split": rows.group_by("split").len("n_cases").sort("split").to_dicts(),
        "counts_by_category": by_cat.to_dicts(),
        "rubric_versions": sorted(rows["rubric_version"].drop_nulls().unique().to_list()),
        "created_at": created_at.isoformat(),
    }


def manifest_frame(manifests: list[dict]) -> pl.DataFrame:
    """`eval_set_manifests` rows from manifest dicts."""
    schema = polars_schema(EvalSetManifests)
    return pl.DataFrame([{**{k: m[k] for k in schema if k not in ("week", "created_at")},
                          "week": date.fromisoformat(m["week"]),
                          "created_at": datetime.fromisoformat(m["created_at"])} for m in manifests],
                        schema=schema)
