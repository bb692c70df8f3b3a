"""How far annotators agree: Cohen's κ per pair and Krippendorff's α over all, per rubric version.

Works on `human_labels` rows (current ones; older versions are ignored) and never
mixes rubric versions. Per-annotator bias is `annotator_stats.py`'s; which label is
gold is `gold.py`'s.
statsmodels, krippendorff and numpy load only when a figure is computed.
"""

import itertools
import warnings
from collections.abc import Sequence

import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.labels.current import current_by_annotator
from feedback_pipeline.labels.schemas import LabelAgreement

_FIELDS = ("verdict", "failure_category")


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
    ann = current_by_annotator(labels, "annotation")
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
    columns = polars_schema(LabelAgreement)
    schema = {**{g: (pl.String if g == "rubric_version" else labels.schema[g]) for g in groups},
              **{k: v for k, v in columns.items() if k != "rubric_version"}}
    return pl.DataFrame(rows, schema=schema)


def _kappa(pair: pl.DataFrame, a: str, b: str) -> dict:
    import numpy as np
    from statsmodels.stats.inter_rater import cohens_kappa

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
        import krippendorff

        value = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    # Percent agreement over all rater pairs within items: Σ C(n_c, 2) / Σ C(n, 2).
    per_value = long.group_by("trace_id", "_value").len()
    same = (per_value["len"] * (per_value["len"] - 1) // 2).sum()
    n_item = long.group_by("trace_id").len()["len"]
    total = (n_item * (n_item - 1) // 2).sum()
    return {"metric": "krippendorff_alpha", "rater_a": None, "rater_b": None, "value": value,
            "ci_low": None, "ci_high": None, "percent_agreement": same / total if total else None,
            "n_items": wide.height, "n_raters": len(raters)}
