"""Published snapshot folders: `exports/eval_sets/<agent_id>/<week>/` with cases.parquet,
cases.jsonl and manifest.json, written once and never overwritten.

Same hash: left alone; another hash: ExportConflictError. Preference-pair files are
`preference_pairs.py`; shared publishing (tables, the analyst database) is
`feedback_pipeline.publish`. No Dagster here.
"""

import json
import shutil
import uuid
from pathlib import Path

import polars as pl

from feedback_pipeline.evalset.canonical import canonical_lines, jsonl_text, lines_hash
from feedback_pipeline.evalset.schemas import EvalSetSnapshots
from feedback_pipeline.frames import conform
from feedback_pipeline.publish import PARTITION_PATTERN, safe_name


class ExportConflictError(RuntimeError):
    """An export already exists with different content; published snapshots are never overwritten."""


def export_snapshot(rows: pl.DataFrame, manifest: dict, exports_dir: str | Path) -> Path:
    """Write `eval_sets/<agent_id>/<week>/` (Parquet, JSONL, manifest.json); return the folder.

    The folder is staged whole and renamed into place. If it exists with the same
    content hash nothing is written; with another hash, ExportConflictError.
    """
    lines = canonical_lines(rows)
    actual = lines_hash(lines)
    if actual != manifest["content_hash"]:
        raise ValueError(f"rows hash to {actual} but the manifest says {manifest['content_hash']}")
    exports_dir = Path(exports_dir)
    agent, week = safe_name(manifest["agent_id"], PARTITION_PATTERN), safe_name(manifest["week"], PARTITION_PATTERN)
    target = exports_dir / "eval_sets" / agent / week
    if target.exists():
        _check_same(target, actual)
        return target
    staging = exports_dir / ".staging" / f"{manifest['snapshot_id']}.{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        conform(rows, EvalSetSnapshots).sort("case_id").write_parquet(staging / "cases.parquet")
        (staging / "cases.jsonl").write_text(jsonl_text(lines), "utf-8")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), "utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)  # atomic; fails if another writer got there first
        except OSError:
            _check_same(target, actual)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_same(target: Path, expected_hash: str) -> None:
    try:
        existing = json.loads((target / "manifest.json").read_text("utf-8"))["content_hash"]
    except (OSError, ValueError, KeyError) as exc:
        raise ExportConflictError(f"{target} exists but its manifest.json is unreadable ({exc}); "
                                  "inspect it by hand, it is never overwritten") from exc
    if existing != expected_hash:
        raise ExportConflictError(
            f"{target} was published with content hash {existing}; this run produced {expected_hash}. "
            "A published snapshot is never overwritten: find out why the inputs changed "
            "(late labels? pass labels as of the week's end), or publish a new week.")
