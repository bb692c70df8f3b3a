"""One label import, as a pure function: new inbox files + what the warehouse holds → new tables.

Reads each file, validates the rows together (so same-import conflicts are seen across
files), merges them and the escalation labels into the history, and stamps the new
quarantine rows. The warehouse reads and writes are `storage.py`'s; the Dagster asset
(`assets.py`) only calls these.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from feedback_pipeline.frames import conform
from feedback_pipeline.labels.escalations import escalation_labels
from feedback_pipeline.labels.history import merge_labels
from feedback_pipeline.labels.reading import read_label_file
from feedback_pipeline.labels.schemas import LabelQuarantine
from feedback_pipeline.labels.shapes import LABEL_COLUMNS, QUARANTINE_COLUMNS
from feedback_pipeline.labels.validation import DEFAULT_CLOCK_SKEW, validate_labels


@dataclass(frozen=True)
class LabelImport:
    history: pl.DataFrame  # the new human_labels
    quarantine: pl.DataFrame  # the new label_quarantine: earlier rows + this import's
    new_quarantine: pl.DataFrame  # this import's quarantine rows
    stats: dict[str, int]  # read, accepted, duplicates, quarantined, superseded (label files)
    escalation_labels_added: int


def import_labels(
    files: Sequence[tuple[str, Path]],
    history: pl.DataFrame | None,
    quarantine: pl.DataFrame | None,
    traces: pl.DataFrame,
    rubrics: Mapping[str, Sequence[str]],
    rubric_version: str,
    *,
    imported_at: datetime,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LabelImport:
    """Import `files` ((name shown in the tables, path) pairs) into `history` and `quarantine`
    (None: the first import).

    `traces`: trace_id, timestamp, escalated, escalation_reason of every known trace.
    Escalated traces with a reason become labels under `rubric_version` (the current
    rubric). `imported_at` is also the "now" a labeled_at may not lie beyond (+ `clock_skew`).
    """
    candidates, problems = [], []
    for name, path in files:
        found, bad = read_label_file(path)
        candidates.append(found.with_columns(pl.lit(name).alias("source_file")))
        problems.append(bad.with_columns(pl.lit(name).alias("source_file")))
    if candidates:
        accepted, refused = validate_labels(pl.concat(candidates), traces.select("trace_id", "timestamp"),
                                            rubrics, now=imported_at, clock_skew=clock_skew)
        refused = pl.concat([*problems, refused], how="diagonal_relaxed")
    else:
        accepted, refused = pl.DataFrame(schema=LABEL_COLUMNS), pl.DataFrame(schema=QUARANTINE_COLUMNS)
    history, stats = merge_labels(history, accepted, quarantined=refused.height, imported_at=imported_at)
    escalated = traces.filter(pl.col("escalated"))
    history, esc_stats = merge_labels(history, escalation_labels(escalated, rubric_version),
                                      imported_at=imported_at)
    new_quarantine = conform(refused.with_columns(pl.lit(imported_at).alias("quarantined_at")), LabelQuarantine)
    earlier = conform(quarantine, LabelQuarantine) if quarantine is not None else new_quarantine.clear()
    return LabelImport(history, pl.concat([earlier, new_quarantine]), new_quarantine, stats, esc_stats["accepted"])


def current_with_weeks(history: pl.DataFrame, traces: pl.DataFrame) -> pl.DataFrame:
    """The current labels, each with its trace's week (agreement is reported per week)."""
    return (history.filter(pl.col("is_current"))
            .join(traces.select("trace_id", "week"), on="trace_id", how="left"))


def weeks_changed(history: pl.DataFrame, traces: pl.DataFrame, imported_at: datetime) -> list[str]:
    """The weeks (ISO Mondays) of the traces whose labels this import added or superseded:
    the partitions whose estimates must be refreshed."""
    touched = history.filter(pl.col("imported_at") == imported_at).select("trace_id").unique()
    weeks = touched.join(traces.select("trace_id", "week"), on="trace_id").get_column("week")
    return sorted({w.isoformat() for w in weeks.drop_nulls().to_list()})
