"""Accepted labels → the `human_labels` history: idempotent re-import, supersede on re-label.

Pure: the previous history + this import's accepted rows → the new history and the
import's accounting. Nothing is deleted: a corrected label keeps its row with
`is_current = false`. Which rows are accepted at all is `validation.py`'s.
"""

from datetime import datetime, timezone

import polars as pl

from feedback_pipeline.frames import conform, empty_frame
from feedback_pipeline.labels.schemas import HumanLabels
from feedback_pipeline.labels.shapes import HUMAN_LABEL_COLUMNS, LABEL_COLUMNS, conform_to

SUPERSEDE_KEY = ("source", "trace_id", "annotator_id", "rubric_version")
SUPERSEDE_ORDER = ("labeled_at", "imported_at", "source_file", "source_line", "label_id")


def merge_labels(
    existing_history: pl.DataFrame | None,
    accepted_new: pl.DataFrame,
    *,
    quarantined: pl.DataFrame | int = 0,
    imported_at: datetime | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """(new human_labels history, import stats) after adding `accepted_new`.

    A row is a duplicate when its file was imported before (same file_sha256) or an
    identical label (same label_id) is already in history or earlier in this batch.
    Per SUPERSEDE_KEY the label with the latest labeled_at is current (ties: the later
    import, then file and row); each older one keeps its row with is_current = false
    and superseded_by = the label that followed it.
    Stats: read = accepted + duplicates + quarantined; superseded = rows newly made non-current.
    """
    history = (conform(existing_history, HumanLabels) if existing_history is not None
               else empty_frame(HumanLabels))
    imported_at = imported_at or datetime.now(timezone.utc)
    new = conform_to(accepted_new, LABEL_COLUMNS)
    seen_files = history["file_sha256"].drop_nulls().unique().implode()
    duplicate = (pl.col("file_sha256").is_in(seen_files).fill_null(False)
                 | pl.col("label_id").is_in(history["label_id"].implode())
                 | ~pl.col("label_id").is_first_distinct())
    new = new.with_columns(duplicate.alias("_dup"))
    added = new.filter(~pl.col("_dup")).with_columns(
        pl.lit(imported_at).cast(pl.Datetime("us", "UTC")).alias("imported_at"),
        pl.lit(True).alias("is_current"),
        pl.lit(None, pl.String).alias("superseded_by"),
    ).select(HUMAN_LABEL_COLUMNS.keys())
    merged = pl.concat([history, added]).with_columns(
        pl.col("label_id").shift(-1).over(SUPERSEDE_KEY, order_by=list(SUPERSEDE_ORDER)).alias("superseded_by"),
    ).with_columns(pl.col("superseded_by").is_null().alias("is_current"))
    n_quarantined = quarantined if isinstance(quarantined, int) else quarantined.height
    n_dup = int(new["_dup"].sum())
    stats = {
        "read": added.height + n_dup + n_quarantined,
        "accepted": added.height,
        "duplicates": n_dup,
        "quarantined": n_quarantined,
        "superseded": int((~merged["is_current"]).sum() - (~history["is_current"]).sum()),
    }
    return merged, stats
