"""The rules a label row must pass before it joins `human_labels`, each with an actionable reason.

Pure: candidate rows (text, as the readers return them) + the known traces and rubric
versions + the import time → (accepted rows typed as LABEL_COLUMNS, quarantine rows).
Row rules are listed in `_rules`; same-import conflicts are `conflicts.py`'s; what
happens to accepted rows (duplicates, supersede) is `history.py`'s.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl

from feedback_pipeline.label_studio import VERDICTS
from feedback_pipeline.labels.conflicts import mark_conflicts
from feedback_pipeline.labels.identity import with_label_id
from feedback_pipeline.labels.shapes import (
    CANDIDATE_COLUMNS, FILE_SOURCES, LABEL_COLUMNS, LABEL_FIELDS, QUARANTINE_COLUMNS, conform_to,
)

# How far past the import time a labeled_at may lie (the labeling side's clock may run ahead).
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
_ISO = "%Y-%m-%dT%H:%M:%S%.fZ"
_UTC = pl.Datetime("us", "UTC")


def validate_labels(
    candidates: pl.DataFrame,
    known_traces: pl.DataFrame | pl.Series | set[str],
    known_rubric_versions: Mapping[str, Sequence[str]],
    *,
    now: datetime | None = None,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted rows typed as LABEL_COLUMNS, quarantined rows with one reason per problem).

    `known_traces`: a frame of trace_id and timestamp (a label may not precede its
    trace), or just the ids. `now`: the import time (default: the clock); a labeled_at
    more than `clock_skew` after it is refused. Text is trimmed; verdict and
    failure_category are compared in lower case. A row with several problems is
    quarantined once, its reasons joined by "; ".
    """
    now = now or datetime.now(timezone.utc)
    df = (
        conform_to(candidates, CANDIDATE_COLUMNS).with_row_index("_i")
        .with_columns(_blank_to_null(pl.col(f)).alias(f) for f in LABEL_FIELDS if f != "notes")
        .with_columns(pl.col("verdict", "failure_category").str.to_lowercase(),
                      pl.col("source").fill_null("annotation"))
        .join(_trace_times(known_traces), on="trace_id", how="left", maintain_order="left")
        .join(_version_frame(known_rubric_versions), on="rubric_version", how="left", maintain_order="left")
        .join(_category_frame(known_rubric_versions), on=["rubric_version", "failure_category"],
              how="left", maintain_order="left")
        .with_columns(_parse_utc(pl.col("labeled_at")).alias("_ts"))
    )
    rules = _rules(", ".join(sorted(known_rubric_versions)) or "none", now, clock_skew)
    df = df.with_columns(
        pl.concat_str([pl.when(cond).then(msg) for _, cond, msg in rules],
                      separator="; ", ignore_nulls=True).alias("_why"),
        pl.concat_str([pl.when(cond).then(pl.lit(f)) for f, cond, _ in rules],
                      separator=",", ignore_nulls=True).alias("_fields"),
    ).with_columns(pl.col("_fields").str.split(",").list.unique(maintain_order=True).list.join(","))
    df = mark_conflicts(with_label_id(df.with_columns(
        pl.col("_ts").alias("labeled_at"), _blank_to_null(pl.col("notes")).alias("notes"))))
    bad = pl.col("_why") != ""
    quarantined = df.filter(bad).select(
        "source_file", "source_line", "file_sha256", "trace_id", "annotator_id",
        pl.col("_fields").alias("field"),
        pl.format("{} row {}: {}", pl.col("source_file").fill_null("(no file)"),
                  pl.col("source_line").cast(pl.String).fill_null("?"), "_why").alias("reason"),
        "raw_text",
    )
    return df.filter(~bad).select(LABEL_COLUMNS.keys()), conform_to(quarantined, QUARANTINE_COLUMNS)


def _rules(known_list: str, now: datetime, clock_skew: timedelta) -> list[tuple[str, pl.Expr, pl.Expr]]:
    """(field, broken when, reason) per rule, in the order reasons are listed."""
    tid, ver, cat, rv, lat, ts = (pl.col(c) for c in ("trace_id", "verdict", "failure_category",
                                                     "rubric_version", "labeled_at", "_ts"))
    allowed, trace_ts = pl.col("_allowed"), pl.col("_trace_ts")
    latest = pl.lit(now + clock_skew).cast(_UTC)
    skew = f"{clock_skew.total_seconds() / 60:g} minutes"
    ran_at = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        ("trace_id", tid.is_null(), pl.lit("trace_id is empty")),
        ("trace_id", tid.is_not_null() & pl.col("_known").is_null(),
         pl.format("trace_id '{}' is not a known trace (not in raw_traces: check for a typo "
                   "or a trace from another environment)", tid)),
        ("annotator_id", pl.col("annotator_id").is_null(),
         pl.lit("annotator_id is empty: say who labeled the row")),
        ("verdict", ver.is_null(), pl.lit("verdict is empty: must be pass or fail")),
        ("verdict", ~ver.is_in(VERDICTS), pl.format("verdict '{}' is not pass or fail", ver)),
        ("rubric_version", rv.is_null(), pl.lit(f"rubric_version is empty (known: {known_list})")),
        ("rubric_version", rv.is_not_null() & allowed.is_null(),
         pl.format("rubric_version '{}' does not exist (known: {})", rv, pl.lit(known_list))),
        ("failure_category", cat.is_not_null() & allowed.is_not_null() & pl.col("_cat_ok").is_null(),
         pl.format("failure_category '{}' is not in rubric {} (allowed: {})", cat, rv, allowed)),
        ("failure_category", (ver == "fail") & cat.is_null(),
         pl.format("verdict fail needs a failure_category (one of: {})",
                   allowed.fill_null("the rubric's categories"))),
        ("failure_category", (ver == "pass") & cat.is_not_null(),
         pl.format("verdict pass must not carry a failure_category (got '{}'): clear it or "
                   "change the verdict to fail", cat)),
        ("labeled_at", lat.is_null(), pl.lit("labeled_at is empty")),
        ("labeled_at", lat.is_not_null() & ts.is_null(),
         pl.format("labeled_at '{}' is not an ISO-8601 time such as 2024-05-06T14:03:00Z", lat)),
        ("labeled_at", ts < trace_ts,
         pl.format("labeled_at {} is before the trace's timestamp {}: fix the date or the trace_id",
                   ts.dt.strftime(_ISO), trace_ts.dt.strftime(_ISO))),
        ("labeled_at", ts > latest,
         pl.format("labeled_at {} is in the future (the import ran at {}, allowing {} of clock skew): "
                   "fix the date or the labeling tool's clock",
                   ts.dt.strftime(_ISO), pl.lit(ran_at), pl.lit(skew))),
        ("source", ~pl.col("source").is_in(FILE_SOURCES),
         pl.format("source '{}' is not one of {}", pl.col("source"), pl.lit(", ".join(FILE_SOURCES)))),
    ]


def _trace_times(known: pl.DataFrame | pl.Series | set[str]) -> pl.DataFrame:
    """trace_id → `_known` (True) and `_trace_ts` (null when only ids were given)."""
    if isinstance(known, pl.DataFrame):
        frame = known.select(pl.col("trace_id").cast(pl.String), pl.col("timestamp").cast(_UTC))
    else:
        ids = sorted(known) if isinstance(known, set) else known
        frame = pl.DataFrame({"trace_id": pl.Series(ids, dtype=pl.String)}).with_columns(
            pl.lit(None, _UTC).alias("timestamp"))
    return (frame.group_by("trace_id").agg(pl.col("timestamp").min().alias("_trace_ts"))
            .with_columns(pl.lit(True).alias("_known")))


def _version_frame(known: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    versions = sorted(known)
    return pl.DataFrame({"rubric_version": versions, "_allowed": [", ".join(known[v]) for v in versions]},
                        schema={"rubric_version": pl.String, "_allowed": pl.String})


def _category_frame(known: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(v, c, True) for v in sorted(known) for c in known[v]],
        schema={"rubric_version": pl.String, "failure_category": pl.String, "_cat_ok": pl.Boolean},
        orient="row",
    )


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    trimmed = expr.str.strip_chars()
    return pl.when(trimmed == "").then(None).otherwise(trimmed)


def _parse_utc(expr: pl.Expr) -> pl.Expr:
    """ISO-8601 text → UTC datetime (null when unparseable); naive times are read as UTC.

    DuckDB's TIMESTAMPTZ cast accepts every ISO-8601 spelling (Z, ±hh:mm, ±hhmm,
    fractions, date only) in one vectorized call; polars would need one format per spelling.
    """
    def parse(s: pl.Series) -> pl.Series:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("t", s.to_frame("s").with_row_index("i"))
        out = con.sql("SELECT TRY_CAST(s AS TIMESTAMPTZ) AS ts FROM t ORDER BY i").pl()["ts"]
        return out.cast(_UTC)
    return expr.map_batches(parse, return_dtype=_UTC)
