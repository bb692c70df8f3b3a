"""How far annotators agree, who drifts, and which label is gold for each trace.

Works on `human_labels` rows (current ones; older versions are ignored) and never
mixes rubric versions: every figure is per rubric version (and per week when asked).
Reading label files lives in `parse.py`; design-weighted rates belong to the estimators.

Gold label (`resolve_labels`), per trace and rubric version, first rule that applies:
1. `adjudicated`: a current `source = "adjudication"` label wins (the latest if several);
2. `single` / `unanimous`: every annotator gave the same verdict and category;
3. `majority`: more than half of the annotators gave the same verdict and category;
4. `unresolved`: no gold label (verdict null); the trace is on `adjudication_list`;
5. `escalation` (only with include_escalation=True): no annotator label at all, but an
   escalation label exists.
"""

import itertools
import warnings
from collections.abc import Sequence

import krippendorff
import numpy as np
import polars as pl
from statsmodels.stats.inter_rater import cohens_kappa

AGREEMENT_COLUMNS: dict[str, pl.DataType] = {
    "rubric_version": pl.String, "field": pl.String, "metric": pl.String,
    "rater_a": pl.String, "rater_b": pl.String, "value": pl.Float64,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "percent_agreement": pl.Float64,
    "n_items": pl.Int64, "n_raters": pl.Int64, "n_ratings": pl.Int64,
}
_FIELDS = ("verdict", "failure_category")


def _current(labels: pl.DataFrame, source: str) -> pl.DataFrame:
    """Current labels of one source, one per (rubric version, trace, annotator): the latest."""
    out = labels
    if "is_current" in out.columns:
        out = out.filter(pl.col("is_current"))
    if "source" in out.columns:
        out = out.filter(pl.col("source") == source)
    return (out.sort("labeled_at", nulls_last=False)
            .unique(["rubric_version", "trace_id", "annotator_id"], keep="last", maintain_order=True)
            .with_columns(pl.when(pl.col("verdict") == "fail")
                          .then(pl.format("fail:{}", pl.col("failure_category").fill_null("?")))
                          .otherwise(pl.col("verdict")).alias("_full")))


def _values_for(ann: pl.DataFrame, field: str) -> pl.DataFrame:
    """(group, trace_id, annotator_id, value) rows rated on `field`.

    The category is compared only among labels that say fail: "do they agree on why".
    """
    if field == "verdict":
        return ann.with_columns(pl.col("verdict").alias("_value"))
    return ann.filter(pl.col("verdict") == "fail").with_columns(pl.col("failure_category").alias("_value"))


def agreement_summary(labels: pl.DataFrame, *, week_col: str | None = None) -> pl.DataFrame:
    """Cohen's κ per annotator pair and Krippendorff's α (nominal) over all annotators.

    One row per (rubric_version[, week], field, metric[, pair]); `field` is `verdict`
    or `failure_category` (among fail labels). κ comes with statsmodels' asymptotic 95 %
    CI (clipped to [-1, 1]); κ is null when chance agreement is 1 (both raters used a
    single value) and α is null when only one value occurs: agreement is then undefined,
    `percent_agreement` still says what happened. Only items rated by ≥ 2 annotators count.
    """
    groups = ["rubric_version"] + ([week_col] if week_col else [])
    ann = _current(labels, "annotation")
    rows: list[dict] = []
    for field in _FIELDS:
        rated = _values_for(ann, field).filter(pl.col("_value").is_not_null())
        rated = rated.filter(pl.len().over(groups + ["trace_id"]) >= 2)
        for key, grp in rated.group_by(groups, maintain_order=True):
            base = {**dict(zip(groups, key)), "field": field}
            wide = grp.pivot(on="annotator_id", index="trace_id", values="_value",
                             aggregate_function="first", sort_columns=True)
            raters = [c for c in wide.columns if c != "trace_id"]
            rows.append({**base, **_alpha(grp, wide, raters), "n_ratings": grp.height})
            for a, b in itertools.combinations(raters, 2):
                pair = wide.select(a, b).drop_nulls()
                if pair.height:
                    rows.append({**base, **_kappa(pair, a, b), "n_ratings": 2 * pair.height})
    schema = {**{g: (pl.String if g == "rubric_version" else labels.schema[g]) for g in groups},
              **{k: v for k, v in AGREEMENT_COLUMNS.items() if k != "rubric_version"}}
    return pl.DataFrame(rows, schema=schema)


def _kappa(pair: pl.DataFrame, a: str, b: str) -> dict:
    cats = sorted(set(pair[a]) | set(pair[b]))
    cells = pair.group_by(a, b).len()
    table = np.zeros((len(cats), len(cats)))
    table[[cats.index(v) for v in cells[a]], [cats.index(v) for v in cells[b]]] = cells["len"]
    value = low = high = None
    if len(cats) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pe == 1 → κ undefined
            res = cohens_kappa(table)
        if np.isfinite(res.kappa):
            value = float(res.kappa)
            low, high = (float(np.clip(x, -1, 1)) if np.isfinite(x) else None
                         for x in (res.kappa_low, res.kappa_upp))
    return {"metric": "cohens_kappa", "rater_a": a, "rater_b": b, "value": value, "ci_low": low,
            "ci_high": high, "percent_agreement": float(np.trace(table) / table.sum()),
            "n_items": pair.height, "n_raters": 2}


def _alpha(long: pl.DataFrame, wide: pl.DataFrame, raters: Sequence[str]) -> dict:
    cats = long["_value"].unique().sort().to_list()
    codes = wide.select(pl.col(r).replace_strict(cats, list(range(len(cats))), default=None,
                                                     return_dtype=pl.Float64) for r in raters)
    matrix = codes.to_numpy().T  # raters × items, nan where a rater did not label the item
    value = None
    if len(cats) > 1:
        value = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    # Percent agreement over all rater pairs within items: Σ C(n_c, 2) / Σ C(n, 2).
    per_value = long.group_by("trace_id", "_value").len()
    same = (per_value["len"] * (per_value["len"] - 1) // 2).sum()
    n_item = long.group_by("trace_id").len()["len"]
    total = (n_item * (n_item - 1) // 2).sum()
    return {"metric": "krippendorff_alpha", "rater_a": None, "rater_b": None, "value": value,
            "ci_low": None, "ci_high": None, "percent_agreement": same / total if total else None,
            "n_items": wide.height, "n_raters": len(raters)}


def annotator_stats(labels: pl.DataFrame, *, week_col: str | None = None) -> pl.DataFrame:
    """Per annotator: pass rate, agreement with the others' majority, and their bias.

    On items other annotators also labeled, the majority is taken over the *other*
    annotators only (leave-one-out, ties excluded), so a rater cannot agree with
    themselves. `pass_rate_gap` = own pass rate − the others' pass rate on the same
    items: a lenient rater is clearly positive, a careless one has low agreement.
    """
    groups = ["rubric_version"] + ([week_col] if week_col else [])
    item = groups + ["trace_id"]
    is_pass = (pl.col("verdict") == "pass").cast(pl.Int64)
    ann = _current(labels, "annotation").with_columns(
        (pl.len().over(item) - 1).alias("_n_others"),
        (is_pass.sum().over(item) - is_pass).alias("_others_pass"),
    ).with_columns(
        pl.when(pl.col("_others_pass") * 2 > pl.col("_n_others")).then(pl.lit("pass"))
        .when(pl.col("_others_pass") * 2 < pl.col("_n_others")).then(pl.lit("fail"))
        .alias("_majority_others"),
    )
    shared = pl.col("_n_others") > 0
    return ann.group_by(groups + ["annotator_id"], maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("n_labels"),
        (pl.col("verdict") == "pass").mean().alias("pass_rate"),
        shared.sum().cast(pl.Int64).alias("n_shared"),
        (pl.col("verdict") == pl.col("_majority_others")).filter(pl.col("_majority_others").is_not_null())
        .mean().alias("agreement_with_majority"),
        (pl.col("verdict") == "pass").filter(shared).mean().alias("pass_rate_on_shared"),
        (pl.col("_others_pass").filter(shared).sum() / pl.col("_n_others").filter(shared).sum())
        .alias("others_pass_rate_on_shared"),
    ).with_columns(
        (pl.col("pass_rate_on_shared") - pl.col("others_pass_rate_on_shared")).alias("pass_rate_gap"),
    ).sort(groups + ["annotator_id"])


def resolve_labels(labels: pl.DataFrame, *, include_escalation: bool = False) -> pl.DataFrame:
    """One gold label per (trace_id, rubric_version); the rules are in the module docstring.

    Columns: trace_id, rubric_version, verdict, failure_category, resolution,
    n_annotators, n_agreeing (annotators who gave the gold label; null when adjudicated).
    """
    ann = _current(labels, "annotation")
    key = ["rubric_version", "trace_id"]
    votes = (ann.group_by(key + ["_full"]).agg(pl.len().alias("_votes"))
             .sort(key + ["_votes", "_full"], descending=[False, False, True, False])
             .group_by(key, maintain_order=True).agg(
                 pl.col("_votes").sum().alias("n_annotators"),
                 pl.len().alias("_n_distinct"),
                 pl.col("_full").first().alias("_top"),
                 pl.col("_votes").first().alias("_top_votes")))
    resolution = (pl.when(pl.col("n_annotators") == 1).then(pl.lit("single"))
                  .when(pl.col("_n_distinct") == 1).then(pl.lit("unanimous"))
                  .when(pl.col("_top_votes") * 2 > pl.col("n_annotators")).then(pl.lit("majority"))
                  .otherwise(pl.lit("unresolved")))
    voted = votes.with_columns(resolution.alias("resolution")).select(
        *key, pl.when(pl.col("resolution") != "unresolved").then("_top").alias("_full"),
        "resolution", pl.col("n_annotators").cast(pl.Int64),
        pl.when(pl.col("resolution") != "unresolved").then("_top_votes").cast(pl.Int64).alias("n_agreeing"),
    )
    adjudicated = _latest(labels, "adjudication").select(
        *key, "_full", pl.lit("adjudicated").alias("resolution"))
    gold = pl.concat([
        adjudicated.join(voted.select(*key, "n_annotators"), on=key, how="left")
        .with_columns(pl.lit(None, pl.Int64).alias("n_agreeing")),
        voted.join(adjudicated, on=key, how="anti"),
    ], how="diagonal_relaxed")
    if include_escalation:
        escalated = _latest(labels, "escalation").join(gold, on=key, how="anti").select(
            *key, "_full", pl.lit("escalation").alias("resolution"),
            pl.lit(0, pl.Int64).alias("n_annotators"), pl.lit(None, pl.Int64).alias("n_agreeing"))
        gold = pl.concat([gold, escalated], how="diagonal_relaxed")
    parts = pl.col("_full").str.split_exact(":", 1)
    return gold.select(
        "trace_id", "rubric_version",
        parts.struct.field("field_0").alias("verdict"),
        parts.struct.field("field_1").alias("failure_category"),
        "resolution", pl.col("n_annotators").fill_null(0), "n_agreeing",
    ).sort("rubric_version", "trace_id")


def _latest(labels: pl.DataFrame, source: str) -> pl.DataFrame:
    return (_current(labels, source).sort("labeled_at")
            .unique(["rubric_version", "trace_id"], keep="last", maintain_order=True))


def adjudication_list(labels: pl.DataFrame, queue: pl.DataFrame | None = None) -> pl.DataFrame:
    """Traces whose annotators disagree on the same rubric version and that no one adjudicated yet.

    Columns: trace_id, rubric_version, disagreement_on (verdict | failure_category),
    labels_given ("alice=fail:tool_failed; bob=pass"), n_annotators, resolution (majority
    or unresolved, from resolve_labels: unresolved rows first). With `queue`, the queue's
    columns (week, agent_id, text...) are joined on trace_id, so the rows can go through
    `queue_to_label_studio_tasks(..., label_source="adjudication")` like the queue itself.
    """
    key = ["rubric_version", "trace_id"]
    ann = _current(labels, "annotation").sort("annotator_id")
    disputed = ann.group_by(key, maintain_order=True).agg(
        pl.col("_full").n_unique().alias("_n_full"),
        pl.col("verdict").n_unique().alias("_n_verdict"),
        pl.format("{}={}", "annotator_id", "_full").str.join("; ").alias("labels_given"),
    ).filter(pl.col("_n_full") > 1)
    adjudicated = _latest(labels, "adjudication").select(key)
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
