"""The adjudication list: traces whose annotators disagree and no one settled yet, and its export.

The list goes out as a CSV and as Label Studio tasks (`label_source = adjudication`),
so the adjudicator's answers come back through the inbox like any label. The rules
that make a label gold are `gold.py`'s.
"""

import json
from pathlib import Path

import polars as pl

from feedback_pipeline.files import atomic_write
from feedback_pipeline.label_studio import queue_to_label_studio_tasks
from feedback_pipeline.labels.current import current_by_annotator, latest_by_trace
from feedback_pipeline.labels.gold import resolve_labels

# The queue columns Label Studio tasks are built from.
_TASK_COLUMNS = {"user_message", "agent_response", "context", "queue_position", "week", "agent_id",
                 "stratum", "inclusion_prob"}


def adjudication_list(labels: pl.DataFrame, queue: pl.DataFrame | None = None) -> pl.DataFrame:
    """Traces whose annotators disagree on the same rubric version and that no one adjudicated yet.

    Columns: trace_id, rubric_version, disagreement_on (verdict | failure_category),
    labels_given ("alice=fail:tool_failed; bob=pass"), n_annotators, resolution (majority
    or unresolved, from resolve_labels: unresolved rows first). With `queue`, the queue's
    columns (week, agent_id, text...) are joined on trace_id, so the rows can go through
    `queue_to_label_studio_tasks(..., label_source="adjudication")` like the queue itself.
    """
    key = ["rubric_version", "trace_id"]
    ann = current_by_annotator(labels, "annotation").sort("annotator_id")
    disputed = ann.group_by(key, maintain_order=True).agg(
        pl.col("_full").n_unique().alias("_n_full"),
        pl.col("verdict").n_unique().alias("_n_verdict"),
        pl.format("{}={}", "annotator_id", "_full").str.join("; ").alias("labels_given"),
    ).filter(pl.col("_n_full") > 1)
    adjudicated = latest_by_trace(labels, "adjudication").select(key)
    out = (disputed.join(adjudicated, on=key, how="anti")
           .join(resolve_labels(labels).select(*key, "resolution", "n_annotators"), on=key, how="left")
           .select("trace_id", "rubric_version",
                   pl.when(pl.col("_n_verdict") > 1).then(pl.lit("verdict"))
                   .otherwise(pl.lit("failure_category")).alias("disagreement_on"),
                   "labels_given", "n_annotators", "resolution")
           .sort(pl.col("resolution") != "unresolved", "rubric_version", "trace_id"))
    if queue is not None:
        out = out.join(queue.drop([c for c in ("rubric_version",) if c in queue.columns]),
                       on="trace_id", how="left", maintain_order="left")
    return out


def write_adjudication_export(folder: Path, adjudication: pl.DataFrame, rubric_version: str) -> Path:
    """adjudication.csv (flat columns) and, when the queue's text is joined, label_studio_tasks.json."""
    folder.mkdir(parents=True, exist_ok=True)
    flat = adjudication.with_columns(
        [pl.col(c).cast(pl.String) for c, t in adjudication.schema.items() if t in (pl.Date,)]
    )
    atomic_write(folder / "adjudication.csv",
                 flat.select([c for c, t in flat.schema.items() if not isinstance(t, (pl.List, pl.Struct))]).write_csv())
    if _TASK_COLUMNS <= set(adjudication.columns) and adjudication.height:
        tasks = queue_to_label_studio_tasks(adjudication.drop_nulls("week"), rubric_version,
                                            label_source="adjudication")
        atomic_write(folder / "label_studio_tasks.json", json.dumps(tasks, ensure_ascii=False))
    return folder
