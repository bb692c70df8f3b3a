"""Near-duplicate new cases: which fresh candidate nearly repeats a kept or earlier one.

The text compared and the order cases are taken in live here; the MinHash-LSH arithmetic
is `minhash.py` (numpy, imported only when a week has fresh cases).
"""

import polars as pl

SHINGLE = 5  # characters per shingle


def near_duplicates(kept: pl.DataFrame, fresh: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """`fresh` plus `duplicate_of`: the kept or earlier fresh case it nearly repeats.

    Text compared: the previous user turn + this user turn, normalised. Fresh cases are
    taken failures first, then annotation before escalation, then by case_id; each is
    checked against the kept set and the fresh cases already taken, so of a cluster
    exactly one representative is left. "Near" is MinHash-LSH over character 5-grams
    (128 permutations, seed 1), computed for all texts at once in `minhash.py`.
    """
    order = [pl.col("verdict") != "fail", pl.col("source") != "annotation", pl.col("case_id")]
    fresh = fresh.sort(order)
    if not fresh.height:
        return fresh.with_columns(pl.lit(None, pl.String).alias("duplicate_of"))
    from feedback_pipeline.evalset.minhash import greedy_duplicate_of, minhash_signatures  # numpy, datasketch

    texts = pl.concat([dedup_text(kept), dedup_text(fresh)])
    signatures = minhash_signatures(texts, SHINGLE)
    keys = pl.concat([kept["case_id"], fresh["case_id"]])
    duplicate_of = greedy_duplicate_of(keys, signatures, threshold, first=kept.height)
    return fresh.with_columns(pl.Series("duplicate_of", duplicate_of, dtype=pl.String))


def dedup_text(frame: pl.DataFrame) -> pl.Series:
    """Previous user turn + " | " + this user turn, normalised (the previous turn is taken
    from `_previous_user` where the caller has it redacted already, else from the context)."""
    previous = (pl.col("_previous_user") if "_previous_user" in frame.columns
                else pl.col("context").list.last().struct.field("user_message")).fill_null("")
    text = pl.concat_str([previous, pl.col("user_message").fill_null("")], separator=" | ")
    return frame.select(
        text.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\d+", "0")
        .str.replace_all(r"[^\w|]+", " ").str.replace_all(r"\s+", " ").str.strip_chars())[:, 0]
