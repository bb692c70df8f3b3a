"""Simulated annotators for `make demo`: they label each week's queue from the demo truth.

Three annotators with known habits, so that agreement, supersede and quarantine all
have something to show: alice (careful, CSV), bob (a little noisier, JSONL) and a
lenient rater who passes ~30 % of true failures (Label Studio JSON export). ~15 % of
traces get a second annotator; alice corrects a couple of her mistakes a day later;
each file carries one malformed row. Deterministic by (seed, week).
"""

import json
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from feedback_pipeline.rubrics import RUBRIC_ID, load_rubric
from feedback_pipeline.label_studio import (
    CATEGORY_CONTROL, NOTES_CONTROL, TASK_DATA_COLUMNS, VERDICT_CONTROL, queue_to_label_studio_tasks,
)

DEMO_RUBRIC_VERSION = "v1"
DOUBLE_LABEL_SHARE = 0.15
CORRECTIONS_PER_WEEK = 2


@dataclass(frozen=True)
class DemoAnnotator:
    annotator_id: str
    file_format: str  # csv | jsonl | label_studio
    miss_rate: float  # P(pass | true failure)
    false_fail_rate: float  # P(fail | true pass)
    wrong_category_rate: float  # P(another category | both say fail)


ANNOTATORS: tuple[DemoAnnotator, ...] = (
    DemoAnnotator("alice@demo.example", "csv", 0.05, 0.03, 0.08),
    DemoAnnotator("bob@demo.example", "jsonl", 0.08, 0.05, 0.12),
    DemoAnnotator("lenient@demo.example", "label_studio", 0.30, 0.01, 0.10),
)


def write_demo_labels(queue: pl.DataFrame, truth: pl.DataFrame, inbox_dir: str | Path,
                      week: str | date, seed: int) -> list[Path]:
    """Writes the week's three label files (CSV, JSONL, Label Studio JSON) into the inbox.

    `truth` has trace_id, true_verdict (pass|fail), true_failure_category; queue rows
    without truth are not labeled. Returns the paths written.
    """
    week_str = str(week)
    rng = np.random.default_rng([seed, zlib.crc32(week_str.encode())])
    truth = truth.select("trace_id", "true_verdict", "true_failure_category")
    items = (queue.join(truth, on="trace_id", how="inner")
             .sort("agent_id", "queue_position", "trace_id"))
    labels = _simulate(items, rng, _labeling_start(week_str))
    inbox = Path(inbox_dir)
    inbox.mkdir(parents=True, exist_ok=True)
    paths = []
    for ann in ANNOTATORS:
        mine = labels.filter(pl.col("annotator_id") == ann.annotator_id)
        stem = f"{week_str}_{ann.annotator_id.split('@')[0]}"
        if ann.file_format == "csv":
            mine = _with_corrections(mine, truth, rng)
            mine = pl.concat([mine, _malformed(mine, trace_id=f"tr_unknown_{week_str}")])
            path = inbox / f"{stem}.csv"
            mine.write_csv(path)
        elif ann.file_format == "jsonl":
            mine = pl.concat([mine, _malformed(mine, verdict="maybe")])
            path = inbox / f"{stem}.jsonl"
            mine.write_ndjson(path)
        else:
            mine = pl.concat([mine, _malformed(mine, failure_category=None)])
            path = inbox / f"{stem}_label_studio_export.json"
            path.write_text(json.dumps(_label_studio_export(items, mine), indent=1))
        paths.append(path)
    return paths


def _labeling_start(week_str: str) -> datetime:
    """Annotators start the Monday after the week closes."""
    return datetime.combine(date.fromisoformat(week_str) + timedelta(days=7), time(9), timezone.utc)


def _simulate(items: pl.DataFrame, rng: np.random.Generator, start: datetime) -> pl.DataFrame:
    n, k = items.height, len(ANNOTATORS)
    primary = rng.integers(k, size=n)
    second = np.where(rng.random(n) < DOUBLE_LABEL_SHARE, (primary + 1 + rng.integers(k - 1, size=n)) % k, -1)
    item_idx = np.concatenate([np.arange(n), np.flatnonzero(second >= 0)])
    who = np.concatenate([primary, second[second >= 0]])
    true_fail = (items["true_verdict"].to_numpy() == "fail")[item_idx]
    true_cat = items["true_failure_category"].to_numpy()[item_idx]
    miss, false_fail, wrong_cat = (np.array([getattr(a, f) for a in ANNOTATORS])[who]
                                   for f in ("miss_rate", "false_fail_rate", "wrong_category_rate"))
    u = rng.random(len(who))
    says_fail = np.where(true_fail, u >= miss, u < false_fail)
    cats = np.array(load_rubric(RUBRIC_ID, DEMO_RUBRIC_VERSION).categories, dtype=object)
    random_cat = cats[rng.integers(len(cats), size=len(who))]
    keep_cat = true_fail & (rng.random(len(who)) >= wrong_cat)
    category = np.where(says_fail, np.where(keep_cat, true_cat, random_cat), None)
    minutes = np.sort(rng.integers(0, 3 * 24 * 60, size=len(who)))
    return pl.DataFrame({
        "trace_id": items["trace_id"].to_numpy()[item_idx].tolist(),
        "annotator_id": np.array([a.annotator_id for a in ANNOTATORS], dtype=object)[who].tolist(),
        "verdict": np.where(says_fail, "fail", "pass").tolist(),
        "failure_category": category.tolist(),
        "rubric_version": DEMO_RUBRIC_VERSION,
        "labeled_at": [(start + timedelta(minutes=int(m))).strftime("%Y-%m-%dT%H:%M:%SZ") for m in minutes],
        "notes": None,
    }, schema_overrides={"failure_category": pl.String, "notes": pl.String})


def _with_corrections(mine: pl.DataFrame, truth: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Appends a corrected re-label (a day later, the true label) for up to two mistakes."""
    wrong = mine.join(truth, on="trace_id").filter(
        (pl.col("verdict") != pl.col("true_verdict"))
        | (pl.col("failure_category").fill_null("") != pl.col("true_failure_category").fill_null("")))
    if wrong.is_empty():
        return mine
    pick = rng.choice(wrong.height, size=min(CORRECTIONS_PER_WEEK, wrong.height), replace=False)
    fixed = wrong[np.sort(pick).tolist()].select(
        "trace_id", "annotator_id",
        pl.col("true_verdict").alias("verdict"),
        pl.col("true_failure_category").alias("failure_category"),
        "rubric_version",
        (pl.col("labeled_at").str.to_datetime(time_zone="UTC") + pl.duration(days=1))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("labeled_at"),
        pl.lit("corrected after review").alias("notes"),
    )
    return pl.concat([mine, fixed])


def _malformed(mine: pl.DataFrame, **override: object) -> pl.DataFrame:
    """One copy of the annotator's first label with a field broken, so quarantine has work."""
    base = mine.head(1) if mine.height else pl.DataFrame(
        {"trace_id": ["tr_missing"], "annotator_id": ["demo"], "verdict": ["fail"],
         "failure_category": ["other"], "rubric_version": [DEMO_RUBRIC_VERSION],
         "labeled_at": ["2024-01-01T00:00:00Z"], "notes": [None]}, schema=mine.schema)
    if "failure_category" in override:  # fail without a category
        override = {"verdict": "fail", **override}
    return base.with_columns(pl.lit(v, pl.String).alias(k) for k, v in override.items()).with_columns(
        pl.lit("demo: deliberately malformed row").alias("notes"))


def _label_studio_export(items: pl.DataFrame, mine: pl.DataFrame) -> list[dict]:
    """A Label Studio JSON export of the tasks this annotator labeled (one annotation each)."""
    queue_cols = items.with_columns(pl.lit(None, pl.String).alias(c) for c in TASK_DATA_COLUMNS
                                    if c not in items.columns)
    labeled = queue_cols.join(mine.select("trace_id").unique(), on="trace_id", how="semi")
    tasks = queue_to_label_studio_tasks(labeled, DEMO_RUBRIC_VERSION)
    by_trace = {t["data"]["trace_id"]: t for t in tasks}
    export = []
    for n, row in enumerate(mine.iter_rows(named=True), start=1):
        task = by_trace[row["trace_id"]]
        result = [{"from_name": VERDICT_CONTROL, "to_name": "agent_response", "type": "choices",
                   "value": {"choices": [row["verdict"]]}}]
        if row["failure_category"]:
            result.append({"from_name": CATEGORY_CONTROL, "to_name": "agent_response",
                           "type": "choices", "value": {"choices": [row["failure_category"]]}})
        if row["notes"]:
            result.append({"from_name": NOTES_CONTROL, "to_name": "agent_response",
                           "type": "textarea", "value": {"text": [row["notes"]]}})
        export.append({
            "id": n, "data": task["data"],
            "annotations": [{
                "id": n, "completed_by": {"id": 3, "email": row["annotator_id"]},
                "result": result, "was_cancelled": False, "ground_truth": False,
                "created_at": row["labeled_at"], "updated_at": row["labeled_at"], "task": n,
            }],
        })
    return export
