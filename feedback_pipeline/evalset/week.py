"""Every agent's snapshot of one week, checked against the manifests already stored.

From the week's candidates and each agent's latest earlier snapshot to the rows,
manifests and summary a run writes and reports; a snapshot whose recomputed hash
differs from its stored one is listed as mismatched instead (it is never rewritten).
Pure: the warehouse reads and writes are `store.py`.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from datetime import date, datetime, timezone

import polars as pl

from feedback_pipeline.evalset.config import EvalSetConfig
from feedback_pipeline.evalset.diff import diff_snapshots
from feedback_pipeline.evalset.manifest import manifest
from feedback_pipeline.evalset.schemas import EvalSetCandidates, EvalSetSnapshots
from feedback_pipeline.evalset.snapshot import build_snapshot
from feedback_pipeline.frames import empty_frame


@dataclass(frozen=True)
class WeekBuild:
    snapshots: list[pl.DataFrame]  # one per agent
    manifests: list[dict]  # in the same order
    summary: list[dict]  # one row per snapshot, for the run's metadata
    mismatched: list[str]  # snapshot ids whose recomputed hash differs from the stored one

    @cached_property
    def rows(self) -> pl.DataFrame:
        """All agents' snapshot rows of the week."""
        return pl.concat(self.snapshots) if self.snapshots else empty_frame(EvalSetSnapshots)


def build_week(candidates: pl.DataFrame | None, previous: pl.DataFrame, stored: dict[str, dict], week: date,
               cfg: EvalSetConfig) -> WeekBuild:
    """The snapshots of every agent with a candidate or an earlier snapshot, for the week.

    `stored` holds the week's manifests already written (by snapshot_id): a snapshot whose
    recomputed hash differs from its stored one is listed as mismatched, not returned.
    """
    agents = sorted(set(candidates["agent_id"].drop_nulls().unique().to_list() if candidates is not None else [])
                    | set(previous["agent_id"].unique().to_list() if previous.height else []))
    now = datetime.now(timezone.utc)
    cands = candidates if candidates is not None else empty_frame(EvalSetCandidates)
    prevs = {a: previous.filter(pl.col("agent_id") == a) if previous.height else None for a in agents}

    def build(agent: str) -> tuple[pl.DataFrame, dict]:
        prev = prevs[agent]
        return build_snapshot(prev if prev is not None and prev.height else None, cands, agent, week, cfg)

    # Agents are independent and their work is mostly Polars and numpy, which release the GIL.
    with ThreadPoolExecutor() as pool:
        built = list(pool.map(build, agents))
    snapshots, manifests, summary, mismatched = [], [], [], []
    for agent, (rows, report) in zip(agents, built):
        prev = prevs[agent]
        snapshot_id = f"{agent}@{week.isoformat()}"
        old = stored.get(snapshot_id)
        m = manifest(rows, created_at=old["created_at"] if old else now, agent_id=agent, week=week)
        if old is not None and m["content_hash"] != old["content_hash"]:
            mismatched.append(snapshot_id)
            continue
        diff = diff_snapshots(prev, rows) if prev is not None and prev.height else None
        summary.append({
            "snapshot_id": snapshot_id, "n_cases": report["n_cases"], "added": report["n_added"],
            "relabeled": report["n_relabeled"], "canary": report["n_canary"],
            "left_out": ", ".join(f"{k}: {v}" for k, v in report["left_out_by_reason"].items() if v),
            "removed": int((diff["change"] == "removed").sum()) if diff is not None else 0,
            "hash": m["content_hash"][:12],
        })
        snapshots.append(rows)
        manifests.append(m)
    return WeekBuild(snapshots, manifests, summary, mismatched)
