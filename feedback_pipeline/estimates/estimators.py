"""Failure-rate estimators for one agent-week from the stratified human sample.

Pure functions over Polars frames (no Dagster): `quality_estimates` calls
`estimate_quality` with the agent-weeks' `automated_scores` and the labeled queue.

Methods (rows of the output, `method` column):
- `hajek`: Σ_h W_h·ȳ_h, ȳ_h = Σ w·y / Σ w within stratum, W_h = N_h/N (known).
- `horvitz_thompson`: Σ w·y / N. Equals `hajek` unless the heavy-clicker cap
  made weights unequal within a stratum.
- `ppi`: PPI++ (Angelopoulos et al. 2023): λ·F̄ + Hájek estimate of mean(y − λf),
  f the judge's prediction, F̄ its mean over all traffic, one power-tuned λ ∈ [0, 1].
- `naive_thumbs` (failure_rate only; thumbs have no category): thumbs-down share of
  rated traces. `naive_sample`: unweighted failure share of the labels. Both with
  Wilson intervals and biased on purpose: shown so the bias is visible.

Where each part lives: `labeled` (checking labels, metric columns), `stratum_stats`
(per-stratum sums, merging unlabeled strata, partial labeling), `design_based`
(Hájek, HT), `ppi`, `intervals` (Jeffreys/MOVER, Wilson rows, the SE).
"""

from collections.abc import Sequence

import polars as pl

from feedback_pipeline.estimates.design_based import design_rows
from feedback_pipeline.estimates.intervals import naive_sample_row, null_row, thumbs_row
from feedback_pipeline.estimates.labeled import labeled_rows, metric_columns, prepare_labels
from feedback_pipeline.estimates.schemas import QualityEstimates
from feedback_pipeline.estimates.stratum_stats import merge_unlabeled, stratum_stats
from feedback_pipeline.frames import conform, empty_frame, polars_schema
from feedback_pipeline.rubrics import RUBRIC_ID, failure_categories, load_rubric
from feedback_pipeline.sampling.strata import assign_strata

OUTPUT_SCHEMA: dict[str, pl.DataType] = polars_schema(QualityEstimates)
__all__ = ["OUTPUT_SCHEMA", "estimate_quality", "labeled_rows"]


def estimate_quality(
    population: pl.DataFrame,
    labeled: pl.DataFrame,
    categories: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """Failure rate and per-category rates per agent-week, every method (OUTPUT_SCHEMA).

    population: `automated_scores` rows of the agent-weeks (a `stratum` column is
    added with `assign_strata` if missing). labeled: queue rows joined with one
    adjudicated human label each (verdict "pass"/"fail", failure_category); rows
    with a null verdict are queue items not labeled yet and are skipped.
    categories: the rubric version's failure categories (None: the newest rubric's).
    """
    categories = failure_categories() if categories is None else categories
    if "stratum" not in population.columns:
        population = assign_strata(population)
    metrics = ["failure_rate", *[f"failure_rate:{c}" for c in categories]]
    population = population.with_columns(metric_columns("judge_verdict", "judge_failure_category", metrics, population))
    labels = prepare_labels(population, labeled, metrics)
    by_agent_week = labels.partition_by("agent_id", "week", as_dict=True)
    rows: list[dict] = []
    for (agent_id, week), pop in population.group_by("agent_id", "week", maintain_order=True):
        lab = by_agent_week.get((agent_id, week), labels.clear())
        rows.extend(_agent_week_rows(pop, lab, metrics, alpha, week, agent_id))
    return pl.DataFrame(rows, schema=OUTPUT_SCHEMA | {"week": population.schema["week"]}).sort(
        "week", "agent_id", "metric", "method"
    )


def estimate_by_rubric_version(population: pl.DataFrame, queue: pl.DataFrame, gold: pl.DataFrame) -> pl.DataFrame:
    """`estimate_quality` of a week once per rubric version among its queue's gold labels
    (versions are never mixed silently), in the QualityEstimates shape; no rows for an
    empty week, null-estimate rows when nothing is labeled yet."""
    parts = []
    if not population.is_empty():
        versions = gold.join(queue.select("trace_id"), on="trace_id")["rubric_version"].unique().sort().to_list()
        for version in versions or [None]:
            labels = gold.filter(pl.col("rubric_version") == version) if version else gold.clear()
            labeled = queue.join(labels, on="trace_id", how="left")
            parts.append(estimate_quality(population, labeled, load_rubric(RUBRIC_ID, version).categories))
    return conform(pl.concat(parts), QualityEstimates) if parts else empty_frame(QualityEstimates)


def _agent_week_rows(pop, lab, metrics, alpha, week, agent_id) -> list[dict]:
    n_pop, n_lab = pop.height, lab.height
    versions = None
    if "rubric_version" in lab.columns and lab["rubric_version"].drop_nulls().len():
        versions = ",".join(sorted(lab["rubric_version"].drop_nulls().unique().to_list()))
    base = {"week": week, "agent_id": agent_id, "n_labeled": n_lab, "n_population": n_pop, "rubric_versions": versions}
    out = [thumbs_row(pop, alpha) | base | {"metric": "failure_rate"}]
    if n_lab == 0:
        for m in metrics:
            for method in ("hajek", "horvitz_thompson", "ppi", "naive_sample"):
                out.append(base | null_row("no human labels in this agent-week") | {"metric": m, "method": method})
        return out
    strata, notes = merge_unlabeled(pop, lab)
    stats = stratum_stats(pop, lab, strata, metrics)
    for j, m in enumerate(metrics):
        out.append(base | naive_sample_row(lab[f"y:{m}"].to_numpy(), alpha) | {"metric": m})
        column = {k: v[:, j] if v.ndim == 2 else v for k, v in stats.items()}
        for row in design_rows(column | {"has_judge": stats["has_judge"][j]}, alpha):
            row["notes"] = "; ".join(filter(None, [notes, row["notes"]])) or None
            out.append(base | row | {"metric": m})
    return out
