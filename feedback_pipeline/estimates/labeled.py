"""The labeled rows an estimate reads: checked, joined to their agent-week, one 0/1 column per metric.

Validation of labels (pass/fail verdicts, one per trace, π in (0, 1]) is shared with
the impact comparisons (`labeled_rows`). No estimator arithmetic here: that is
`stratum_stats`, `design_based`, `ppi`.
"""

from collections.abc import Sequence

import polars as pl

LABELED_COLUMNS = ("trace_id", "stratum", "inclusion_prob", "stratum_sample_size", "verdict", "failure_category")


def metric_columns(verdict: str, category: str, metrics: list[str], frame: pl.DataFrame) -> list[pl.Expr]:
    """One 0/1 column per metric (`y:` for humans, `f:` for the judge; null if no verdict)."""
    prefix = "f:" if verdict.startswith("judge") else "y:"
    if verdict not in frame.columns:
        return [pl.lit(None, pl.Float64).alias(prefix + m) for m in metrics]
    fail = pl.col(verdict) == "fail"
    cat = pl.col(category) if category in frame.columns else pl.lit(None, pl.String)
    exprs = [fail.cast(pl.Float64).alias(prefix + "failure_rate")]
    for m in metrics[1:]:
        hit = fail & (cat == m.split(":", 1)[1]).fill_null(False)
        exprs.append(pl.when(pl.col(verdict).is_null()).then(None).otherwise(hit.cast(pl.Float64)).alias(prefix + m))
    return exprs


def labeled_rows(labeled: pl.DataFrame, required: Sequence[str] = LABELED_COLUMNS) -> pl.DataFrame:
    """The rows that carry a label (null verdict = queued, not labeled yet), after checking
    what every design-weighted estimate needs: pass/fail verdicts, one label per trace,
    π in (0, 1]. Shared by the quality estimates and the impact comparisons."""
    missing = [c for c in required if c not in labeled.columns]
    if missing:
        raise ValueError(f"labeled rows lack columns {missing}")
    done = labeled.filter(pl.col("verdict").is_not_null())
    bad = done.filter(~pl.col("verdict").is_in(["pass", "fail"]))
    if bad.height:
        raise ValueError(f"verdict must be pass or fail, got {bad['verdict'].unique().to_list()}")
    if done["trace_id"].is_duplicated().any():
        raise ValueError("one label per trace_id expected: adjudicate or pick one first")
    if (done["inclusion_prob"].is_null() | (done["inclusion_prob"] <= 0) | (done["inclusion_prob"] > 1)).any():
        raise ValueError("inclusion_prob must be in (0, 1] for every labeled trace")
    return done


def prepare_labels(population: pl.DataFrame, labeled: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    """The labeled rows with agent_id, week and a `y:<metric>` column per metric."""
    done = labeled_rows(labeled)
    extra = [c for c in ("rubric_version",) if c in done.columns]
    keep = done.select(*LABELED_COLUMNS, *extra)
    joined = keep.join(
        population.select("trace_id", "agent_id", "week"), on="trace_id", how="left",
    )
    unknown = joined.filter(pl.col("agent_id").is_null())
    if unknown.height:
        raise ValueError(f"{unknown.height} labeled traces not in population, e.g. {unknown['trace_id'][0]}")
    return joined.with_columns(metric_columns("verdict", "failure_category", metrics, joined))
