"""Which `human_labels` rows a week's snapshot may use: those known when the week closed.

Time travel over the label history only (label rows in, label rows out); turning labels
into cases is `candidates.py`.
"""

from datetime import datetime, timezone

import polars as pl

from feedback_pipeline.labels.history import SUPERSEDE_KEY, SUPERSEDE_ORDER


def labels_as_of(history: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """`human_labels` as they stood at `cutoff` (rows imported before it, is_current recomputed).

    Feeding a week's snapshot the labels as of the week's end makes re-materializing
    that week reproduce its hash even after later corrections. The same supersede rule as
    `labels.history.merge_labels`, by one sort and a shift.
    """
    key, order = list(SUPERSEDE_KEY), list(SUPERSEDE_ORDER)
    # One sort and a shift: the same as shift(-1).over(key, order_by=order), a few times faster.
    same_key = pl.all_horizontal(pl.col(k).shift(-1).eq_missing(pl.col(k)) for k in key)
    return (history.filter(pl.col("imported_at") < cutoff).with_row_index("_position").sort(key + order)
            .with_columns(pl.when(same_key).then(pl.col("label_id").shift(-1)).alias("superseded_by"))
            .sort("_position").drop("_position")
            .with_columns(pl.col("superseded_by").is_null().alias("is_current")))


def labels_known_by(history: pl.DataFrame, week_end: datetime) -> pl.DataFrame:
    """Labels made before the week closed (by `labeled_at`): what the week's snapshot may use.

    Using the label's own time keeps a week's snapshot reproducible when files are
    imported late; a label dated into a past week arriving later changes that week's
    recomputation, and the immutability check then fails loudly instead of rewriting it.
    A label known by the week's end may still be of a trace from a later week (a wrong
    date): `candidate_cases` leaves it out, it is no case of this week.
    """
    made = history.filter(pl.col("labeled_at") < week_end)
    return labels_as_of(made, datetime.max.replace(tzinfo=timezone.utc))
