"""Human-labeled failure rates of a change, overall and per category: `hajek` and `ppi` rows.

`hajek`: the labels alone, design-weighted (`effects.side_estimate` with strata, 1/π
weights and the side as a domain). `ppi`: prediction-powered (PPI++, Angelopoulos et al.
2023) with the judge over all of the side's traffic: θ = ȳ + λ(F̄ − f̄), F̄ the judge's
(Hájek) rate over the side's turns, ȳ and f̄ the labels' and the judge's Hájek rates on
the labeled turns; Var = V(ȳ) − 2λ·C(ȳ, f̄) + λ²(V(f̄) + V(F̄)), with one λ ∈ [0, 1]
minimising the variance of the difference (λ = ΣC / Σ(V(f̄) + V(F̄)) over both sides).
The stratified design already uses the judge (its fails form a stratum), so PPI gains
little on the overall rate and more on categories the strata do not separate.

A metric with fewer than MIN_LABELS_PER_SIDE labels per side, or fewer than
`turn_metrics.MIN_EVENTS` labeled failures of its kind, keeps its rows with null
statistics and a note. Which categories are compared: `categories_of` (the rubric).
"""

from collections.abc import Sequence

import numpy as np
import polars as pl

from feedback_pipeline.estimates.labeled import labeled_rows
from feedback_pipeline.impact.effects import SideEstimate, compare_estimates, side_estimate
from feedback_pipeline.impact.turn_metrics import MIN_EVENTS, cluster_key, metric_row
from feedback_pipeline.rubrics import RUBRIC_ID, failure_categories, rubric_versions

MIN_LABELS_PER_SIDE = 30


def categories_of(*labeled: pl.DataFrame | None) -> list[str]:
    """The failure categories to compare: those of the labels' rubric versions (oldest version
    first; the newest rubric's when the labels name no version on disk), then any other
    category the labels carry, sorted."""
    versions, seen = set(), set()
    for lab in labeled:
        if lab is None:
            continue
        if "rubric_version" in lab.columns:
            versions |= set(lab["rubric_version"].drop_nulls().unique().to_list())
        if "failure_category" in lab.columns:
            seen |= set(lab["failure_category"].drop_nulls().unique().to_list())
    ordered: list[str] = []
    for version in [v for v in rubric_versions(RUBRIC_ID) if v in versions] or [None]:
        ordered += [c for c in failure_categories(version) if c not in ordered]
    return [*ordered, *sorted(seen - set(ordered))]


def _label_frame(labeled: pl.DataFrame, side: pl.DataFrame) -> pl.DataFrame:
    """Labeled rows with weight `_w`, stratum key `_stratum`, PSU `_cluster`, domain flag `_in`."""
    done = labeled_rows(labeled, ("trace_id", "inclusion_prob", "verdict"))
    keys = [c for c in ("agent_id", "week", "stratum") if c in done.columns]
    stratum = pl.struct(keys).hash() if keys else pl.lit(0, pl.UInt64)
    weight = 1 / pl.col("inclusion_prob")
    if "stratum_sample_size" in done.columns:  # labels are a random part of the stratum's queue rows
        weight = weight * pl.col("stratum_sample_size") / pl.len().over(stratum)
    judge = [c for c in ("judge_verdict", "judge_failure_category") if c in side.columns]
    take = judge + [c for c in ("conversation_id",) if c in side.columns and c not in done.columns]
    done = done.drop(judge, strict=False).join(side.select("trace_id", *take), on="trace_id", how="left")
    for c in ("failure_category", "conversation_id", "judge_verdict", "judge_failure_category"):
        if c not in done.columns:
            done = done.with_columns(pl.lit(None, pl.String).alias(c))
    return done.with_columns(
        _w=weight, _stratum=stratum, _in=pl.col("trace_id").is_in(side["trace_id"].implode()),
        _cluster=pl.coalesce("conversation_id", "trace_id").hash(),
    )


def _hits(verdict: str, category: str, wanted: str | None) -> pl.Expr:
    """1.0 when the verdict is fail (of the wanted category), 0.0 otherwise, null without verdict."""
    hit = pl.col(verdict) == "fail"
    if wanted is not None:
        hit = hit & (pl.col(category) == wanted).fill_null(False)
    return hit.cast(pl.Float64)


def _ppi(labels: pl.DataFrame, side: pl.DataFrame, wanted: str | None) -> tuple | None:
    """Per side: (ȳ, f̄, F̄, V_yy, V_ff, V_yf, V_F, label estimate) for PPI, or None without a judge."""
    if "judge_verdict" not in side.columns or side["judge_verdict"].drop_nulls().len() == 0:
        return None
    if wanted is not None and "judge_failure_category" not in side.columns:
        return None
    prob = pl.col("judge_selection_prob") if "judge_selection_prob" in side.columns else pl.lit(1.0)
    traffic = side.filter(pl.col("judge_verdict").is_not_null()).select(
        cluster_key(side), f=_hits("judge_verdict", "judge_failure_category", wanted),
        w=1 / prob.fill_null(1.0).clip(lower_bound=1e-9))
    big_f = side_estimate(traffic["f"].to_numpy(), traffic["_cluster"].to_numpy(), traffic["w"].to_numpy())
    y = labels.select(_hits("verdict", "failure_category", wanted))[:, 0].to_numpy()
    f = labels.select(_hits("judge_verdict", "judge_failure_category", wanted).fill_null(big_f.mean))[:, 0]
    args = (labels["_cluster"].to_numpy(), labels["_w"].to_numpy(), labels["_stratum"].to_numpy(),
            labels["_in"].to_numpy())
    ey, ef, eyf = (side_estimate(v, *args) for v in (y, f.to_numpy(), y + f.to_numpy()))
    v_yf = (eyf.variance - ey.variance - ef.variance) / 2
    return ey.mean, ef.mean, big_f.mean, ey.variance, ef.variance, v_yf, big_f.variance, ey


def _ppi_estimates(parts: list[tuple]) -> tuple[list[SideEstimate], float]:
    """PPI++ side estimates with one power-tuned λ ∈ [0, 1] minimising Var(after − before)."""
    num = sum(p[5] for p in parts)
    den = sum(p[4] + p[6] for p in parts)
    lam = float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0
    out = []
    for y, f, big_f, v_yy, v_ff, v_yf, v_f, ey in parts:
        var = max(v_yy - 2 * lam * v_yf + lam**2 * (v_ff + v_f), 0.0)
        out.append(SideEstimate(y + lam * (big_f - f), var, ey.n, ey.psus, ey.df))
    return out, lam


def label_rows(before, after, labeled_before, labeled_after, categories: Sequence[str]) -> list[dict]:
    """`hajek` and `ppi` rows for failure_rate and failure_rate:<category> of each category."""
    metrics = ["failure_rate", *[f"failure_rate:{c}" for c in categories]]
    if labeled_before is None or labeled_after is None:
        return [metric_row(m, method, note="no human labels given") for m in metrics for method in ("hajek", "ppi")]
    sides = (before, after)
    frames = [_label_frame(lab, side) for lab, side in zip((labeled_before, labeled_after), sides)]
    counts = [int(f["_in"].sum()) for f in frames]
    rows = []
    for metric in metrics:
        wanted = metric.split(":", 1)[1] if ":" in metric else None
        ests, events = [], 0
        for f in frames:
            y = f.select(_hits("verdict", "failure_category", wanted))[:, 0].to_numpy()
            ests.append(side_estimate(y, f["_cluster"].to_numpy(), f["_w"].to_numpy(), f["_stratum"].to_numpy(),
                                      f["_in"].to_numpy()))
            events += int((y * f["_in"].to_numpy()).sum())
        if min(counts) < MIN_LABELS_PER_SIDE:
            skip = f"skipped: {counts[0]} labels before, {counts[1]} after (need {MIN_LABELS_PER_SIDE} per side)"
        elif events < MIN_EVENTS:
            skip = f"skipped: {events} labeled failures of this kind (need {MIN_EVENTS})"
        else:
            skip = None
        stats = compare_estimates(*ests)
        sizes = {k: stats[k] for k in ("n_before", "n_after", "mean_before", "mean_after")}
        rows.append(metric_row(metric, "hajek", sizes if skip else stats, skip))
        parts = [_ppi(f, side, wanted) for f, side in zip(frames, sides)] if not skip else []
        if skip or any(p is None for p in parts):
            rows.append(metric_row(metric, "ppi", sizes, skip or "no judge verdicts (or categories) on one side"))
            continue
        ppi, lam = _ppi_estimates(parts)
        rows.append(metric_row(metric, "ppi", compare_estimates(*ppi), f"lambda={lam:.2f}"))
    return rows
