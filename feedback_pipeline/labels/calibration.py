"""Judge vs human on the same traces: accuracy, Cohen's κ, bias, confusion, per month.

Pure functions; statsmodels computes κ.
"""

import json

import numpy as np
import polars as pl
from statsmodels.stats.inter_rater import cohens_kappa

CALIBRATION_COLUMNS: dict[str, pl.DataType] = {
    "month": pl.String, "rubric_version": pl.String, "n_compared": pl.Int64,
    "accuracy": pl.Float64, "cohens_kappa": pl.Float64,
    "judge_fail_rate": pl.Float64, "human_fail_rate": pl.Float64, "judge_bias": pl.Float64,
    "category_accuracy_on_agreed_fails": pl.Float64, "confusion": pl.String,
    "accuracy_change": pl.Float64, "kappa_change": pl.Float64, "drift": pl.Boolean,
}


def _kappa(judge: np.ndarray, human: np.ndarray) -> float | None:
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
    rows = []
    pairs = pairs.with_columns(pl.col("week").dt.strftime("%Y-%m").alias("month"))
    for (month, version), group in pairs.group_by("month", "rubric_version", maintain_order=True):
        judge = (group["judge_verdict"] == "fail").to_numpy().astype(int)
        human = (group["verdict"] == "fail").to_numpy().astype(int)
        both_fail = group.filter((pl.col("judge_verdict") == "fail") & (pl.col("verdict") == "fail"))
        confusion = group.group_by("verdict", "failure_category", "judge_verdict", "judge_failure_category").len()
        rows.append({
            "month": month, "rubric_version": version, "n_compared": group.height,
            "accuracy": float(np.mean(judge == human)),
            "cohens_kappa": _kappa(judge, human),
            "judge_fail_rate": float(judge.mean()), "human_fail_rate": float(human.mean()),
            "judge_bias": float(judge.mean() - human.mean()),
            "category_accuracy_on_agreed_fails": (
                float((both_fail["failure_category"] == both_fail["judge_failure_category"]).mean())
                if both_fail.height else None),
            "confusion": json.dumps(confusion.sort("len", descending=True).to_dicts()),
        })
    out = pl.DataFrame(rows, schema={k: v for k, v in CALIBRATION_COLUMNS.items()
                                     if k not in ("accuracy_change", "kappa_change", "drift")})
    out = out.sort("rubric_version", "month").with_columns(
        (pl.col("accuracy") - pl.col("accuracy").shift(1).over("rubric_version")).alias("accuracy_change"),
        (pl.col("cohens_kappa") - pl.col("cohens_kappa").shift(1).over("rubric_version")).alias("kappa_change"),
    )
    return out.with_columns(
        ((pl.col("accuracy_change") < -drift_threshold) | (pl.col("kappa_change") < -drift_threshold))
        .fill_null(False).alias("drift")
    ).select(list(CALIBRATION_COLUMNS))
