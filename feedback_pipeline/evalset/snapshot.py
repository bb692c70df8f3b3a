"""Eval-set snapshots: which human-verified cases each agent's held-out set holds each week.

Pure functions over Polars frames, no Dagster: gold labels + traces → candidate cases;
the previous snapshot + candidates → this week's snapshot (grow-only, near-duplicates
collapsed, stratified within a size budget, canary fixed); content hash, manifest and
diff. Files on disk and the analyst database live in `publish.py`.

A snapshot is its own rows (one per case per week), so past snapshots are never edited:
a corrected gold label or a newer rubric version shows up as a relabel in the next
week's snapshot. Everything is deterministic (hashes, MinHash seeds, sort orders), so
the same inputs give the same `content_hash`.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl

from feedback_pipeline.evalset.minhash import greedy_duplicate_of, minhash_signatures
from feedback_pipeline.evalset.redaction import previous_user_turn, redact_answers_and_context
from feedback_pipeline.redact import redact_texts

CONTEXT_DTYPE = pl.List(pl.Struct({
    "turn_index": pl.Int64, "user_message": pl.String, "agent_response": pl.String}))
_LABEL = {"verdict": pl.String, "failure_category": pl.String, "rubric_version": pl.String,
          "source": pl.String, "resolution": pl.String}
_TEXT = {"user_message": pl.String, "context": CONTEXT_DTYPE, "agent_response": pl.String}
CANDIDATE_COLUMNS: dict[str, pl.DataType] = {
    "case_id": pl.String, "trace_id": pl.String, "conversation_id": pl.String,
    "turn_index": pl.Int64, "agent_id": pl.String, "user_id": pl.String, **_TEXT, **_LABEL,
    "first_seen_week": pl.Date, "left_out_reason": pl.String,
}
SNAPSHOT_COLUMNS: dict[str, pl.DataType] = {
    "snapshot_id": pl.String, "agent_id": pl.String, "week": pl.Date, "case_id": pl.String,
    "trace_id": pl.String, "conversation_id": pl.String, "turn_index": pl.Int64,
    "split": pl.String, "canary": pl.Boolean, "first_seen_week": pl.Date, **_LABEL, **_TEXT,
}
MANIFEST_COLUMNS: dict[str, pl.DataType] = {
    "snapshot_id": pl.String, "agent_id": pl.String, "week": pl.Date, "content_hash": pl.String,
    "n_cases": pl.Int64, "created_at": pl.Datetime("us", "UTC"),
}
HASH_SCHEME = "sha256/jsonl-sorted-v1"
# The salt keeps the split independent of any other hash of the same id.
SPLIT_SALT = "feedback_pipeline/evalset/split/v1\x1f"
_SHINGLE = 5  # characters per shingle for near-duplicate detection


@dataclass(frozen=True)
class EvalSetConfig:
    test_share: float = 0.8  # share of conversations held out (split == "test")
    canary_size: int = 20  # first N test cases per agent, fixed forever
    initial_target: int = 50  # cases in an agent's first snapshot (at most)
    growth_per_week: int = 25  # new cases a later week may add (at most)
    max_cases: int = 300  # an agent's set stops growing here
    redact_pii: bool = True
    dedup_threshold: float = 0.8  # Jaccard of character 5-gram sets that counts as near-duplicate
    max_new_per_user: int | None = 3  # new cases one user may bring in a week
    pass_weight: float = 2.0  # a failure category's weight is 1; passes get this
    max_context_turns: int = 6  # previous turns kept as context


# ------------------------------------------------------------------ stable hashes

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


# --------------------------------------------------------------------- candidates

def candidate_cases(gold: pl.DataFrame, traces: pl.DataFrame, escalation_labels: pl.DataFrame | None,
                    week: date | str, *, max_context_turns: int = 6) -> pl.DataFrame:
    """One row per labeled trace (CANDIDATE_COLUMNS): its gold label and its text.

    `gold` is `resolve_labels(human_labels)`; `escalation_labels` are `source =
    "escalation"` label rows, used only where no annotator labeled the trace under that
    rubric version. Per trace the newest rubric version with a gold label wins.
    `left_out_reason` is "unresolved_label" (annotators disagree, no adjudication) or
    "missing_trace" (the trace is not in `traces`), else null. `traces` must hold the
    labeled traces' whole conversations (for the context).
    """
    is_esc = pl.col("resolution") == "escalation"
    labels = gold.select(
        "trace_id", "rubric_version", "verdict", "failure_category", "resolution",
        pl.when(is_esc).then(pl.lit("escalation")).otherwise(pl.lit("annotation")).alias("source"))
    if escalation_labels is not None and escalation_labels.height:
        esc = escalation_labels
        if "is_current" in esc.columns:
            esc = esc.filter(pl.col("is_current"))
        if "source" in esc.columns:
            esc = esc.filter(pl.col("source") == "escalation")
        esc = (esc.sort("labeled_at").unique(["trace_id", "rubric_version"], keep="last")
               .join(labels, on=["trace_id", "rubric_version"], how="anti")
               .select("trace_id", "rubric_version", "verdict", "failure_category",
                       pl.lit("escalation").alias("resolution"), pl.lit("escalation").alias("source")))
        labels = pl.concat([labels, esc], how="vertical_relaxed")
    resolved = pl.col("resolution") != "unresolved"
    labels = (labels.sort("trace_id", resolved, _rubric_rank(), "rubric_version")
              .unique("trace_id", keep="last", maintain_order=True))
    turns = traces.unique("trace_id", keep="first").select(
        "trace_id", "conversation_id", "turn_index", "agent_id", "user_id", "user_message",
        "agent_response")
    cases = labels.join(turns, on="trace_id", how="left")
    context = (cases.select("trace_id", "conversation_id", pl.col("turn_index").alias("_turn"))
               .join(turns.select("conversation_id", "turn_index", "user_message", "agent_response"),
                     on="conversation_id")
               .filter(pl.col("turn_index") < pl.col("_turn"))
               .sort("trace_id", "turn_index")
               .group_by("trace_id").agg(
                   pl.struct("turn_index", "user_message", "agent_response")
                   .tail(max_context_turns).alias("context")))
    out = cases.join(context, on="trace_id", how="left").with_columns(
        _empty_if_null("context"),
        case_id_expr(pl.col("trace_id"), pl.col("rubric_version")).alias("case_id"),
        pl.lit(_as_date(week)).alias("first_seen_week"),
        pl.when(~resolved).then(pl.lit("unresolved_label"))
        .when(pl.col("conversation_id").is_null()).then(pl.lit("missing_trace"))
        .alias("left_out_reason"),
    )
    return conform(out, CANDIDATE_COLUMNS).sort("trace_id")


# ----------------------------------------------------------------------- snapshot

def build_snapshot(previous: pl.DataFrame | None, candidates: pl.DataFrame, agent_id: str,
                   week: date | str, config: EvalSetConfig = EvalSetConfig()) -> tuple[pl.DataFrame, dict]:
    """(this week's snapshot rows in SNAPSHOT_COLUMNS, a report of what happened).

    Every case of `previous` (the agent's latest earlier snapshot) stays with its case_id,
    split, canary flag and text; its label follows the newest gold label. New candidates
    are redacted (answers and older context only once chosen, to the same result: see
    `redaction.py`), near-duplicates collapsed, capped per user and chosen by failure
    category within the week's budget. The report: counts (n_cases, n_added, ...),
    `left_out_by_reason` and `left_out` (a frame: trace_id, case_id, reason, duplicate_of).
    """
    week = _as_date(week)
    prev = (conform(previous, SNAPSHOT_COLUMNS) if previous is not None
            else pl.DataFrame(schema=SNAPSHOT_COLUMNS)).filter(pl.col("agent_id") == agent_id)
    if prev.height and prev["week"].max() >= week:
        raise ValueError(f"previous snapshot of {agent_id} is from {prev['week'].max()}, "
                         f"not before {week}: pass the latest snapshot of an earlier week")
    cands = candidates.filter(pl.col("agent_id") == agent_id)
    carried, n_relabeled = _relabel(prev, cands)
    fresh = cands.join(prev.select("trace_id"), on="trace_id", how="anti")
    n_new_candidates = fresh.height
    left_out = [fresh.filter(pl.col("left_out_reason").is_not_null())
                .select("trace_id", "case_id", pl.col("left_out_reason").alias("reason"))]
    fresh = raw = fresh.filter(pl.col("left_out_reason").is_null())
    if config.redact_pii and fresh.height:  # what dedup reads now; answers and context once chosen
        fresh = fresh.with_columns(redact_texts(fresh["user_message"]),
                                   previous_user_turn(fresh).alias("_previous_user"))
    fresh = _near_duplicates(carried, fresh, config.dedup_threshold).with_columns(
        pl.coalesce("user_id", "case_id").alias("_user"), pl.lit(week).alias("first_seen_week"))
    dup = pl.col("duplicate_of").is_not_null()
    fresh = fresh.with_columns(
        pl.when(dup).then(pl.lit("near_duplicate"))
        .when(pl.int_range(pl.len()).over(["_user", dup], order_by="case_id")
              >= (config.max_new_per_user or 2**62))
        .then(pl.lit("per_user_cap")).alias("reason"))
    target = (config.initial_target if not prev.height
              else max(config.initial_target, prev.height + config.growth_per_week))
    target = min(target, config.max_cases)
    chosen, over = _stratified(carried, fresh.filter(pl.col("reason").is_null()),
                               max(0, target - prev.height), config.pass_weight)
    if config.redact_pii and chosen.height:
        chosen = redact_answers_and_context(chosen, raw, "case_id").with_columns(_empty_if_null("context"))
    left_out += [fresh.filter(pl.col("reason").is_not_null())
                 .select("trace_id", "case_id", "reason", "duplicate_of"),
                 over.select("trace_id", "case_id", pl.lit("over_budget").alias("reason"))]
    split_of = carried.select("conversation_id", "split").unique("conversation_id")
    added = chosen.join(split_of, on="conversation_id", how="left").with_columns(
        pl.coalesce("split", stable_split(pl.col("conversation_id"), config.test_share)).alias("split"),
        pl.lit(False).alias("canary"))
    rows = pl.concat([carried, conform(added, SNAPSHOT_COLUMNS)]).with_columns(
        pl.lit(f"{agent_id}@{week}").alias("snapshot_id"), pl.lit(agent_id).alias("agent_id"),
        pl.lit(week).alias("week"))
    rows = _fill_canary(rows, config.canary_size).sort("first_seen_week", "case_id")
    left = pl.concat(left_out, how="diagonal_relaxed")
    report = {
        "snapshot_id": f"{agent_id}@{week}", "n_cases": rows.height, "n_previous": prev.height,
        "n_added": added.height, "n_relabeled": n_relabeled, "target_size": target,
        "n_canary": int(rows["canary"].sum()), "n_candidates_new": n_new_candidates,
        "added_by_stratum": dict(sorted(_counts(chosen, "_stratum").items())),
        "left_out_by_reason": dict(sorted(_counts(left, "reason").items())),
        "left_out": left.sort("reason", "case_id"),
    }
    return conform(rows, SNAPSHOT_COLUMNS), report


def _relabel(prev: pl.DataFrame, cands: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Previous cases with their newest gold label (never an older rubric version's)."""
    new = cands.filter(pl.col("left_out_reason").is_null()).select(
        "trace_id", *[pl.col(c).alias(f"_new_{c}") for c in _LABEL])
    joined = prev.join(new, on="trace_id", how="left")
    take = (pl.col("_new_verdict").is_not_null()
            & (_rubric_rank("_new_rubric_version") >= _rubric_rank("rubric_version")))
    changed = take & pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"_new_{c}"))
                                       for c in ("verdict", "failure_category", "rubric_version"))
    out = joined.with_columns(changed.alias("_changed"),
                              *[pl.when(take).then(f"_new_{c}").otherwise(c).alias(c) for c in _LABEL])
    return out.select(SNAPSHOT_COLUMNS.keys()), int(out["_changed"].sum())


def _near_duplicates(kept: pl.DataFrame, fresh: pl.DataFrame, threshold: float) -> pl.DataFrame:
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
    texts = pl.concat([_dedup_text(kept), _dedup_text(fresh)])
    signatures = minhash_signatures(texts, _SHINGLE)
    keys = pl.concat([kept["case_id"], fresh["case_id"]])
    duplicate_of = greedy_duplicate_of(keys, signatures, threshold, first=kept.height)
    return fresh.with_columns(pl.Series("duplicate_of", duplicate_of, dtype=pl.String))


def _dedup_text(frame: pl.DataFrame) -> pl.Series:
    """Previous user turn + " | " + this user turn, normalised (the previous turn is taken
    from `_previous_user` where the caller has it redacted already, else from the context)."""
    previous = (pl.col("_previous_user") if "_previous_user" in frame.columns
                else pl.col("context").list.last().struct.field("user_message")).fill_null("")
    text = pl.concat_str([previous, pl.col("user_message").fill_null("")], separator=" | ")
    return frame.select(
        text.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\d+", "0")
        .str.replace_all(r"[^\w|]+", " ").str.replace_all(r"\s+", " ").str.strip_chars())[:, 0]


def _stratified(carried: pl.DataFrame, fresh: pl.DataFrame, budget: int,
                pass_weight: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(chosen, over budget): weighted round-robin over strata (each failure category, "pass").

    A case's turn in its stratum is (cases of the stratum already in the set + its rank
    + 1) / weight; the lowest turns win. So the set moves toward balance, a rare category
    is taken as long as it has cases, and one user does not go first twice in a row.
    """
    stratum = (pl.when(pl.col("verdict") == "pass").then(pl.lit("pass"))
               .otherwise(pl.col("failure_category").fill_null("uncategorized")))
    have = carried.group_by(stratum.alias("_stratum")).agg(pl.len().alias("_have"))
    ranked = (fresh.with_columns(stratum.alias("_stratum"))
              .with_columns(pl.int_range(pl.len()).over(["_stratum", "_user"], order_by="case_id")
                            .alias("_urank"))
              .with_columns(pl.int_range(pl.len()).over("_stratum", order_by=["_urank", "source", "case_id"])
                            .alias("_rank"))
              .join(have, on="_stratum", how="left")
              .with_columns(((pl.col("_have").fill_null(0) + pl.col("_rank") + 1)
                             / pl.when(pl.col("_stratum") == "pass").then(pass_weight).otherwise(1.0))
                            .alias("_turn"))
              .sort("_turn", "_stratum", "_rank"))
    return ranked.head(budget), ranked.slice(budget)


def _fill_canary(rows: pl.DataFrame, size: int) -> pl.DataFrame:
    """Canary cases stay; if fewer than `size`, the earliest other test cases join them."""
    need = size - int(rows["canary"].sum())
    if need <= 0:
        return rows
    picks = (rows.filter((pl.col("split") == "test") & ~pl.col("canary"))
             .sort("first_seen_week", "case_id").head(need)["case_id"])
    return rows.with_columns((pl.col("canary") | pl.col("case_id").is_in(picks.implode())).alias("canary"))


# ------------------------------------------------------------ hash, manifest, diff

def canonical_lines(rows: pl.DataFrame) -> list[str]:
    """One JSON object per case (SNAPSHOT_COLUMNS, keys sorted, compact, UTF-8), by case_id.

    Dates are ISO strings; context is a list of objects. Python's json module, not a
    Polars writer, so the bytes do not depend on the Polars version.
    """
    conformed = conform(rows, SNAPSHOT_COLUMNS)
    lines = [(row["case_id"] or "", json.dumps(row, sort_keys=True, ensure_ascii=False,
                                                separators=(",", ":"), default=_json_value))
             for row in conformed.iter_rows(named=True)]
    return [line for _, line in sorted(lines)]


def content_hash(rows: pl.DataFrame) -> str:
    """sha256 of the canonical lines, each followed by "\\n" (= sha256sum of cases.jsonl)."""
    return lines_hash(canonical_lines(rows))


def lines_hash(lines: list[str]) -> str:
    """`content_hash` of rows already turned into `canonical_lines` (so they are built once)."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode("utf-8")).hexdigest()


def verify_immutable(existing_manifest_hash: str, new_rows: pl.DataFrame) -> bool:
    """True when re-materialized rows reproduce the hash already recorded for the snapshot."""
    return content_hash(new_rows) == existing_manifest_hash


def manifest(snapshot_rows: pl.DataFrame, created_at: datetime, *, agent_id: str | None = None,
             week: date | str | None = None) -> dict:
    """JSON-ready description of one snapshot (agent_id/week needed only when it has no rows)."""
    rows = conform(snapshot_rows, SNAPSHOT_COLUMNS)
    agent_id = agent_id or (rows["agent_id"][0] if rows.height else None)
    week = _as_date(week) if week is not None else (rows["week"][0] if rows.height else None)
    if agent_id is None or week is None:
        raise ValueError("an empty snapshot needs agent_id and week to describe it")
    if rows.height and (rows["agent_id"].n_unique() > 1 or rows["week"].n_unique() > 1
                        or rows["case_id"].n_unique() < rows.height):
        raise ValueError("a snapshot holds one agent, one week and each case_id once")
    by_cat = rows.group_by("verdict", "failure_category").len("n_cases").sort(
        "verdict", "failure_category", nulls_last=True)
    return {
        "snapshot_id": f"{agent_id}@{week}", "agent_id": agent_id, "week": week.isoformat(),
        "content_hash": content_hash(rows), "hash_scheme": HASH_SCHEME, "n_cases": rows.height,
        "n_canary": int(rows["canary"].sum()),
        "counts_by_split": rows.group_by("split").len("n_cases").sort("split").to_dicts(),
        "counts_by_category": by_cat.to_dicts(),
        "rubric_versions": sorted(rows["rubric_version"].drop_nulls().unique().to_list()),
        "created_at": created_at.isoformat(),
    }


def manifest_frame(manifests: list[dict]) -> pl.DataFrame:
    """`eval_set_manifests` rows (MANIFEST_COLUMNS) from manifest dicts."""
    return pl.DataFrame([{**{k: m[k] for k in MANIFEST_COLUMNS if k not in ("week", "created_at")},
                          "week": date.fromisoformat(m["week"]),
                          "created_at": datetime.fromisoformat(m["created_at"])} for m in manifests],
                        schema=MANIFEST_COLUMNS)


def diff_snapshots(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Cases added, removed or relabeled (verdict, category or rubric version) from old to new."""
    fields = ["verdict", "failure_category", "rubric_version"]
    pick = lambda f: conform(f, SNAPSHOT_COLUMNS).select("case_id", "trace_id", *fields)  # noqa: E731
    both = pick(old).join(pick(new), on="case_id", how="full", coalesce=True, suffix="_new")
    changed = pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_new")) for c in fields)
    change = (pl.when(pl.col("trace_id").is_null()).then(pl.lit("added"))
              .when(pl.col("trace_id_new").is_null()).then(pl.lit("removed"))
              .when(changed).then(pl.lit("relabeled")))
    return (both.with_columns(change.alias("change")).filter(pl.col("change").is_not_null())
            .select("case_id", pl.coalesce("trace_id_new", "trace_id").alias("trace_id"), "change",
                    *[e for c in fields
                      for e in (pl.col(c).alias(f"old_{c}"), pl.col(f"{c}_new").alias(f"new_{c}"))])
            .sort("change", "case_id"))


# ----------------------------------------------------------------------- helpers

def labels_as_of(history: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """`human_labels` as they stood at `cutoff` (rows imported before it, is_current recomputed).

    Feeding a week's snapshot the labels as of the week's end makes re-materializing
    that week reproduce its hash even after later corrections.
    """
    key = ["source", "trace_id", "annotator_id", "rubric_version"]
    order = ["labeled_at", "imported_at", "source_file", "source_row", "label_id"]
    # One sort and a shift: the same as shift(-1).over(key, order_by=order), a few times faster.
    same_key = pl.all_horizontal(pl.col(k).shift(-1).eq_missing(pl.col(k)) for k in key)
    return (history.filter(pl.col("imported_at") < cutoff).with_row_index("_position").sort(key + order)
            .with_columns(pl.when(same_key).then(pl.col("label_id").shift(-1)).alias("superseded_by"))
            .sort("_position").drop("_position")
            .with_columns(pl.col("superseded_by").is_null().alias("is_current")))


def _rubric_rank(column: str = "rubric_version") -> pl.Expr:
    """v2 < v10 (numeric part of "vN"); other names sort after, as text (tie-broken by the caller)."""
    return pl.col(column).str.extract(r"^v(\d+)$").cast(pl.Int64).fill_null(2**62)


def _empty_if_null(column: str) -> pl.Expr:
    return pl.col(column).fill_null(pl.lit([], dtype=CONTEXT_DTYPE)).cast(CONTEXT_DTYPE)


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if not frame.height:
        return {}
    return {k: int(v) for k, v in frame.group_by(column).len().iter_rows()}


def _json_value(value: object) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__} in a snapshot row")


def _as_date(week: date | str) -> date:
    if isinstance(week, date) and not isinstance(week, datetime):
        return week
    return date.fromisoformat(str(week)[:10])


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """`df` with exactly `schema`'s columns, in order (missing ones as nulls)."""
    return df.select([(pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c)
                      for c, t in schema.items()])
