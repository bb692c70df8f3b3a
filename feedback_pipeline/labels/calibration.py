"""Judge vs human on the same traces: accuracy, Cohen's κ, bias, confusion, per month.

Pure functions over (gold label, judge verdict) pairs; the table's shape is the
`JudgeCalibration` model. Gold labels are `gold.py`'s; numpy and statsmodels load
only when a month is computed.
"""

from __future__ import annotations

import json

import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.labels.schemas import JudgeCalibration

# The pairs compared: not a table, the join of gold labels and judge verdicts.
PAIR_COLUMNS: dict[str, pl.DataType] = {
    "trace_id": pl.String, "week": pl.Date, "rubric_version": pl.String, "verdict": pl.String,
    "failure_category": pl.String, "judge_verdict": pl.String, "judge_failure_category": pl.String,
}


def calibration_pairs(gold: pl.DataFrame, judged: pl.DataFrame | None) -> pl.DataFrame:
    """Gold human labels joined to the judge's verdicts on the same traces (PAIR_COLUMNS)."""
    if judged is None:
        return pl.DataFrame(schema=PAIR_COLUMNS)
    pairs = gold.join(judged, on="trace_id")
    return pairs if pairs.height else pl.DataFrame(schema=PAIR_COLUMNS)


def _kappa(judge, human) -> float | None:
    import numpy as np
    from statsmodels.stats.inter_rater import cohens_kappa

    table = np.array([[np.sum((judge == a) & (human == b)) for b in (0, 1)] for a in (0, 1)])
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return None  # one rater used a single value: κ is undefined
    return float(cohens_kappa(table, return_results=False))


def judge_calibration(pairs: pl.DataFrame, drift_threshold: float = 0.05) -> pl.DataFrame:
    """One row per month and rubric version.

    pairs: trace_id, week (date), rubric_version, verdict, failure_category (gold human
    label), judge_verdict, judge_failure_category — only traces both judged and labeled.
    Drift: accuracy or κ fell by more than `drift_threshold` from the previous month.
    """
    import numpy as np

    columns = polars_schema(JudgeCalibration)
    rows = []
    pairs = pairs.with_columns(pl.col("week").dt.strftime("%Y-%m").alias("month"))
    for (month, version), group in pairs.group_by("month", "rubric_version", maintain_order=True):
        judge = (group["judge_verdict"] == "fail").to_numpy().astype(int)
        human = (group["verdict"] == "fail").to_numpy().astype(int)
        both_fail = group.filter((pl.col("judge_verdict") == "fail") & (pl.col("verdict") == "fail"))
        cells = ["verdict", "failure_category", "judge_verdict", "judge_failure_category"]
        confusion = group.group_by(cells).len().sort(  # ties in a fixed order: the table is reproducible
            ["len", *cells], descending=[True, False, False, False, False], nulls_last=True)
        rows.append({
            "month": month, "rubric_version": version, "n_compared": group.height,
            "accuracy": float(np.mean(judge == human)),
            "cohens_kappa": _kappa(judge, human),
            "judge_fail_rate": float(judge.mean()), "human_fail_rate": float(human.mean()),
            "judge_bias": float(judge.mean() - human.mean()),
            "category_accuracy_on_agreed_fails": (
                float((both_fail["failure_category"] == both_fail["judge_failure_category"]).mean())
                if both_fail.height else None),
            "confusion": json.dumps(confusion.to_dicts()),
        })
    out = pl.DataFrame(rows, schema={k: v for k, v in columns.items()
                                     if k not in ("accuracy_change", "kappa_change", "drift")})
    out = out.sort("rubric_version", "month").with_columns(
        (pl.col("accuracy") - pl.col("accuracy").shift(1).over("rubric_version")).alias("accuracy_change"),
        (pl.col("cohens_kappa") - pl.col("cohens_kappa").shift(1).over("rubric_version")).alias("kappa_change"),
    )
    return out.with_columns(
        ((pl.col("accuracy_change") < -drift_threshold) | (pl.col("kappa_change") < -drift_threshold))
        .fill_null(False).alias("drift")
    ).select(list(columns))
