"""A label's identity: `label_id`, the content hash that says two rows are the same label.

Used by validation (file rows), escalations and the merge's duplicate rule; what
supersedes what is `history.py`'s.
"""

import duckdb
import polars as pl

_IDENTITY_FIELDS = ("source", "trace_id", "annotator_id", "rubric_version", "verdict",
                    "failure_category", "notes")


def with_label_id(labels: pl.DataFrame) -> pl.DataFrame:
    """Adds `label_id`: a stable hash of what the label says and who said it, when.

    Two rows with the same id are the same label, whichever file they came from.
    """
    key = pl.concat_str(
        [pl.col(c).cast(pl.String).fill_null("\x00") for c in _IDENTITY_FIELDS]
        + [pl.col("labeled_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").fill_null("\x00")],
        separator="\x1f",
    )

    def sha(s: pl.Series) -> pl.Series:
        con = duckdb.connect()
        con.register("k", s.to_frame("k").with_row_index("i"))
        return con.sql("SELECT left(sha256(k), 32) AS h FROM k ORDER BY i").pl()["h"]
    return labels.with_columns(key.map_batches(sha, return_dtype=pl.String).alias("label_id"))
