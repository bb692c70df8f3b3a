"""Same-import conflicts: two different labels for one (trace, annotator, rubric version, time).

Within one import, rows that pass every row rule but say different things (pass vs
fail, another category or note) under the same key are all refused: which one would
win depends on row order, so none does (ingest treats conflicting traces the same
way). Identical rows are not a conflict; the merge counts them as duplicates. The row
rules are `validation.py`'s.
"""

import polars as pl

# `source` too: an annotation and an adjudication never supersede each other (history.py).
CONFLICT_KEY = ("source", "trace_id", "annotator_id", "rubric_version", "labeled_at")
_CONTENT_FIELDS = ("verdict", "failure_category", "notes")


def mark_conflicts(rows: pl.DataFrame) -> pl.DataFrame:
    """Adds the conflict reason to `_why` (and the differing fields to `_fields`) of every
    valid row (`_why` empty) whose key holds more than one `label_id` in `rows`.

    Needs the typed label columns, `label_id`, `source_file`, `source_line`, `_why`, `_fields`.
    """
    groups = [*CONFLICT_KEY, "_valid"]
    label = (pl.when(pl.col("verdict") == "fail")
             .then(pl.format("fail:{}", pl.col("failure_category").fill_null("?")))
             .otherwise(pl.col("verdict")))
    listing = pl.format("{} row {}: {}", pl.col("source_file").fill_null("(no file)"),
                        pl.col("source_line").cast(pl.String).fill_null("?"),
                        pl.concat_str([label, pl.format(" ({})", "notes")], ignore_nulls=True))
    conflict = pl.col("_valid") & (pl.col("label_id").n_unique().over(groups) > 1)
    differing = pl.concat_str(
        [pl.when(pl.col(f).n_unique().over(groups) > 1).then(pl.lit(f)) for f in _CONTENT_FIELDS],
        separator=",", ignore_nulls=True)
    reason = pl.format(
        "{} different labels for the same trace_id, annotator_id, rubric_version and labeled_at {} "
        "in this import ({}): none is accepted, as which one holds would depend on row order; "
        "keep the right one and import it again",
        pl.col("label_id").n_unique().over(groups),
        pl.col("labeled_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
        listing.str.join("; ").over(groups),
    )
    return (rows.with_columns((pl.col("_why") == "").alias("_valid"))
            .with_columns(pl.when(conflict).then(reason).otherwise(pl.col("_why")).alias("_why"),
                          pl.when(conflict).then(differing).otherwise(pl.col("_fields")).alias("_fields"))
            .drop("_valid"))
