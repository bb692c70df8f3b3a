"""Stable hashes of ids: a case's id and a conversation's test/dev split.

Documented functions of the ids alone (SHA-256, salted), so a case keeps its id and a
conversation its split across runs, machines and library versions. The content hash
of a whole snapshot is in `canonical.py`.
"""

import hashlib

import polars as pl

# The salt keeps the split independent of any other hash of the same id.
SPLIT_SALT = "feedback_pipeline/evalset/split/v1\x1f"


def sha256_hex(values: pl.Series) -> pl.Series:
    """SHA-256 hex digest of each string's UTF-8 bytes (null stays null).

    hashlib per value: Polars has no SHA-256, and opening a DuckDB connection for it
    costs more than hashing a week's few thousand ids.
    """
    return pl.Series(values.name, [None if v is None else hashlib.sha256(v.encode("utf-8")).hexdigest()
                                   for v in values.cast(pl.String).to_list()], dtype=pl.String)


def stable_split(conversation_id: pl.Expr, test_share: float = 0.8) -> pl.Expr:
    """Split "test" or "dev": sha256(SPLIT_SALT + conversation_id), first 8 hex digits / 2³² < share."""
    digest = pl.concat_str([pl.lit(SPLIT_SALT), conversation_id]).map_batches(
        sha256_hex, return_dtype=pl.String)
    bucket = digest.str.slice(0, 8).str.to_integer(base=16) / 2**32
    return pl.when(bucket < test_share).then(pl.lit("test")).otherwise(pl.lit("dev"))


def case_id_expr(trace_id: pl.Expr, rubric_version: pl.Expr) -> pl.Expr:
    """First 32 hex digits of sha256(trace_id + U+001F + rubric_version)."""
    return pl.concat_str([trace_id, rubric_version], separator="\x1f").map_batches(
        sha256_hex, return_dtype=pl.String).str.slice(0, 32)
