"""Impact statistics: before/after effects with clustered error bars, BH, McNemar, PSI.

Pure functions over Polars frames and NumPy arrays (no Dagster): `impact_metrics`
calls `compare_change` per `release_changes` row; `loop_health` calls
`population_stability_index`; eval replay calls `paired_pass_rate`. Which rows form
each side is decided in `changes.py`.

**One side's mean** (`side_estimate`): the Hájek ratio ȳ = Σ w·y / Σ w over the
side's domain (w = 1 for turn metrics, 1/π for human labels, 1/judge_selection_prob
for the judge). Variance by Taylor linearization over clusters (PSUs: conversations;
turns of one conversation are correlated), within strata when the rows come from a
stratified sample, with replacement (no finite-population correction: a version's
effect is a statement about its traffic in general, not about these weeks' turns):
    z_i = w_i·d_i·(y_i − ȳ) / Σ w·d        (d_i = 1 in the side's domain, else 0)
    Z_g = Σ_{i∈g} z_i,   V = Σ_h m_h/(m_h − 1) · Σ_{g∈h} (Z_g − Z̄_h)²
m_h PSUs in stratum h (a lone PSU adds Z_g², conservatively). Unweighted with one
stratum this is the CR1 cluster-robust variance of a mean (statsmodels' OLS on a side
dummy with `cov_type="cluster"` agrees up to its small-sample factor, G/(G−1)·(N−1)/(N−2)
over both sides where this uses G_s/(G_s−1) per side); with one-turn clusters it is s²/n. Human labels outside the side (the other arm, other
weeks, other agents) enter as zeros, as survey domain estimation requires; labels
covering part of the queue get w = 1/π · q_h/ℓ_h (q_h = `stratum_sample_size`).

**Difference** (`compare_estimates`): effect = ȳ_after − ȳ_before, SE = √(V_b + V_a)
(sides independent; a conversation on both sides would only make this conservative),
t reference with Welch–Satterthwaite df = (V_b+V_a)² / (V_b²/df_b + V_a²/df_a),
df_side = Σ_h (m_h − 1). 95 % CI = effect ± t_{.975,df}·SE; two-sided p.
relative_effect = effect / ȳ_before. MDE (80 % power, two-sided 5 %) at the observed
SE: (t_{.975,df} + t_{.80,df})·SE ≈ 2.80·SE.

**Human-labeled failure rates** come in two rows per metric: `hajek` (labels alone, as
above) and `ppi`, prediction-powered (PPI++, Angelopoulos et al. 2023) with the judge
over all of the side's traffic: θ = ȳ + λ(F̄ − f̄), F̄ the judge's (Hájek) rate over the
side's turns, ȳ and f̄ the labels' and the judge's Hájek rates on the labeled turns;
Var = V(ȳ) − 2λ·C(ȳ, f̄) + λ²(V(f̄) + V(F̄)), with one λ ∈ [0, 1] minimising the variance
of the difference (λ = ΣC / Σ(V(f̄) + V(F̄)) over both sides). The stratified design
already uses the judge (its fails form a stratum), so PPI gains little on the overall
rate and more on categories the strata do not separate.

**Across the metrics of a change**: Benjamini–Hochberg (`fdr_bh`) over the rows that
have a p-value. A metric with too few data (MIN_LABELS_PER_SIDE labels per side;
MIN_EVENTS events of a binary metric over both sides) keeps its row with null
statistics and a note, so the gap is visible.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from feedback_pipeline.impact.changes import as_change, comparison_windows, window_plan
from feedback_pipeline.ingest.contract import ESCALATION_REASONS
from feedback_pipeline.estimates.estimators import FAILURE_CATEGORIES, labeled_rows

ALPHA = 0.05
POWER = 0.80
MIN_LABELS_PER_SIDE = 30
MIN_EVENTS = 10
# Proxy gaming: quality *seems* to improve (a PROXY_QUALITY_METRICS estimate drops by at least
# PROXY_MIN_IMPROVEMENT relative; no significance needed: the flag warns about what a reader of the
# dashboard would believe) while the shape evidence is significant (BH-adjusted p < PROXY_ALPHA):
# answers much shorter (response_chars relative effect ≤ −PROXY_LENGTH_DROP) or refusals /
# disclaimers up (relative effect ≥ PROXY_SHAPE_RISE, or up from 0).
PROXY_ALPHA = 0.05
PROXY_QUALITY_METRICS = ("thumbs_down_rate", "judge_failure_rate", "escalation_rate")
PROXY_MIN_IMPROVEMENT = 0.10
PROXY_LENGTH_DROP = 0.25
PROXY_SHAPE_METRICS = ("refusal_rate", "disclaimer_rate")
PROXY_SHAPE_RISE = 0.25
# PSI: bin shares below PSI_EPSILON count as PSI_EPSILON (an empty bin would make ln(q/p) infinite).
PSI_EPSILON = 1e-4
PSI_MODERATE, PSI_LARGE = 0.10, 0.25  # conventional: < 0.1 stable, 0.1–0.25 moderate, > 0.25 large

CONTEXT_COLUMNS = ("agent_id", "change_id", "dimension", "before_version", "after_version")
COMPARISON_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String for c in CONTEXT_COLUMNS}, "metric": pl.String, "method": pl.String,
    "effect": pl.Float64, "relative_effect": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "p_value": pl.Float64, "p_adjusted": pl.Float64, "n_before": pl.Int64, "n_after": pl.Int64,
    "mde": pl.Float64, "proxy_gaming": pl.Boolean, "mean_before": pl.Float64, "mean_after": pl.Float64,
    "std_error": pl.Float64, "design": pl.String, "window": pl.String,
    "proxy_gaming_reason": pl.String, "notes": pl.String,
}
_STAT_KEYS = ("effect", "relative_effect", "ci_low", "ci_high", "p_value", "mde",
              "mean_before", "mean_after", "std_error")


@dataclass(frozen=True)
class SideEstimate:
    """One side's (weighted) mean, its linearization variance, rows in the domain, PSUs, df."""

    mean: float
    variance: float
    n: int
    psus: int
    df: float


def _codes(values: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1].ravel()


def side_estimate(y, cluster=None, weight=None, stratum=None, domain=None) -> SideEstimate:
    """Hájek mean of y over the domain, with the stratified cluster linearization variance.

    All arguments are arrays of one length; `cluster` None makes every row its own PSU;
    rows outside `domain` count as zeros of their stratum (their y is ignored).
    """
    y = np.asarray(y, dtype=float)
    d = np.ones(len(y), bool) if domain is None else np.asarray(domain, bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    wd = np.where(d, w, 0.0)
    total, n = wd.sum(), int(d.sum())
    if n == 0 or total <= 0:
        return SideEstimate(float("nan"), float("nan"), 0, 0, 0.0)
    mean = float((wd * np.where(d, y, 0.0)).sum() / total)
    z = wd * (np.where(d, y, mean) - mean) / total
    s = np.zeros(len(y), np.int64) if stratum is None else _codes(stratum)
    c = np.arange(len(y)) if cluster is None else _codes(cluster)
    psu = _codes(s * (int(c.max()) + 1) + c)
    n_psu, n_strata = int(psu.max()) + 1, int(s.max()) + 1
    psu_stratum = np.empty(n_psu, np.int64)
    psu_stratum[psu] = s
    big_z = np.bincount(psu, z, n_psu)
    m = np.bincount(psu_stratum, minlength=n_strata)
    dev = big_z - (np.bincount(psu_stratum, big_z, n_strata) / np.maximum(m, 1))[psu_stratum]
    ss = np.bincount(psu_stratum, dev**2, n_strata)
    lonely = (m == 1)[psu_stratum]
    variance = float(np.sum(np.where(m > 1, m / np.maximum(m - 1, 1), 0.0) * ss) + np.sum(big_z[lonely] ** 2))
    in_domain = np.bincount(psu_stratum, np.bincount(psu, d, n_psu) > 0, n_strata) > 0
    df = float(max(np.sum(m[in_domain] - 1), 1))
    return SideEstimate(mean, variance, n, int(np.sum(np.bincount(psu, d, n_psu) > 0)), df)


def compare_estimates(before: SideEstimate, after: SideEstimate, alpha: float = ALPHA,
                      power: float = POWER) -> dict:
    """Effect (after − before), relative effect, t-based CI and p, MDE (see module docstring)."""
    out = {"n_before": before.n, "n_after": after.n, "mean_before": before.mean, "mean_after": after.mean}
    if before.n == 0 or after.n == 0:
        return out | dict.fromkeys(("effect", "relative_effect", "ci_low", "ci_high", "p_value", "mde",
                                    "std_error")) | {"notes": "no rows on one side"}
    effect = after.mean - before.mean
    relative = effect / before.mean if before.mean != 0 else None
    var = before.variance + after.variance
    if var <= 0:
        p = 1.0 if effect == 0 else 0.0
        return out | {"effect": effect, "relative_effect": relative, "ci_low": effect, "ci_high": effect,
                      "p_value": p, "mde": 0.0, "std_error": 0.0, "notes": "no variation within either side"}
    df = var**2 / (before.variance**2 / before.df + after.variance**2 / after.df)
    se, q = np.sqrt(var), st.t.ppf(1 - alpha / 2, df)
    return out | {
        "effect": effect, "relative_effect": relative, "ci_low": effect - q * se, "ci_high": effect + q * se,
        "p_value": float(2 * st.t.sf(abs(effect) / se, df)), "mde": float((q + st.t.ppf(power, df)) * se),
        "std_error": float(se),
    }


def analytic_power(effect: float, se: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided z-test of a true `effect` whose estimate has standard error `se`."""
    z = st.norm.ppf(1 - alpha / 2)
    return float(st.norm.cdf(effect / se - z) + st.norm.cdf(-effect / se - z))


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """BH-adjusted p-values (statsmodels `fdr_bh`); None/NaN entries stay None."""
    p = np.array([np.nan if v is None else v for v in p_values], dtype=float)
    out: list[float | None] = [None] * len(p)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok):
        for i, adj in zip(ok, multipletests(p[ok], alpha=ALPHA, method="fdr_bh")[1]):
            out[i] = float(adj)
    return out


# -- the metrics of a change ---------------------------------------------------------------


def _turn_metrics(reasons: Sequence[str]) -> dict[str, tuple[pl.Expr, bool]]:
    """Turn-level metrics: name -> (value expression, is binary)."""
    esc = pl.col("escalated").fill_null(False)
    return {
        "escalation_rate": (esc, True),
        **{f"escalation_rate:{r}": (esc & (pl.col("escalation_reason") == r).fill_null(False), True)
           for r in reasons},
        "thumbs_down_rate": ((pl.col("thumbs") == "down").fill_null(False), True),  # per turn, not per rating
        "user_rewrote_rate": (pl.col("user_rewrote").fill_null(False), True),
        "tool_error_rate": (pl.col("tool_error_count").fill_null(0) > 0, True),
        "latency_ms": (pl.col("latency_ms"), False),
        "response_chars": (pl.col("response_chars"), False),
        "refusal_rate": (pl.col("is_refusal").fill_null(False), True),
        "disclaimer_rate": (pl.col("has_disclaimer").fill_null(False), True),
    }


def _cluster_key(frame: pl.DataFrame) -> pl.Expr:
    column = "conversation_id" if "conversation_id" in frame.columns else "trace_id"
    return pl.col(column).hash().alias("_cluster")


def _row(metric: str, method: str, stats: dict | None = None, note: str | None = None) -> dict:
    row = {"metric": metric, "method": method, **dict.fromkeys(_STAT_KEYS), "n_before": None, "n_after": None}
    row |= stats or {}
    row["notes"] = "; ".join(filter(None, [row.get("notes"), note])) or None
    return row


def _turn_rows(before: pl.DataFrame, after: pl.DataFrame, reasons: Sequence[str]) -> list[dict]:
    metrics = _turn_metrics(reasons)
    usable = {m: (e, b) for m, (e, b) in metrics.items() if set(e.meta.root_names()) <= set(before.columns)}
    sides = [f.select(_cluster_key(f), *[e.cast(pl.Float64).alias(m) for m, (e, _) in usable.items()])
             for f in (before, after)]
    rows = []
    for metric, (_, binary) in metrics.items():
        if metric not in usable:
            rows.append(_row(metric, "mean", note="column missing from scores"))
            continue
        ests = []
        for side in sides:
            vals = side.select("_cluster", metric).drop_nulls()
            ests.append(side_estimate(vals[metric].to_numpy(), vals["_cluster"].to_numpy()))
        stats = compare_estimates(*ests)
        events = sum(e.mean * e.n for e in ests if e.n)
        if binary and events < MIN_EVENTS:
            stats = {k: stats[k] for k in ("n_before", "n_after", "mean_before", "mean_after")}
            rows.append(_row(metric, "mean", stats, f"too few events ({events:.0f} < {MIN_EVENTS})"))
        else:
            rows.append(_row(metric, "mean", stats))
    return rows


def _judge_row(before: pl.DataFrame, after: pl.DataFrame) -> dict:
    if "judge_verdict" not in before.columns:
        return _row("judge_failure_rate", "mean", note="no judge columns in scores")
    prob = pl.col("judge_selection_prob") if "judge_selection_prob" in before.columns else pl.lit(1.0)
    sides = [f.filter(pl.col("judge_verdict").is_not_null()).select(
        _cluster_key(f), y=(pl.col("judge_verdict") == "fail").cast(pl.Float64),
        w=1 / prob.fill_null(1.0).clip(lower_bound=1e-9)) for f in (before, after)]
    method = "hajek" if any((s["w"] != 1).any() for s in sides) else "mean"
    ests = [side_estimate(s["y"].to_numpy(), s["_cluster"].to_numpy(), s["w"].to_numpy()) for s in sides]
    stats = compare_estimates(*ests)
    if min(e.n for e in ests) == 0:
        return _row("judge_failure_rate", method, stats, "no judge verdicts on one side")
    return _row("judge_failure_rate", method, stats)


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
        _cluster_key(side), f=_hits("judge_verdict", "judge_failure_category", wanted),
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


def _label_rows(before, after, labeled_before, labeled_after, categories: Sequence[str]) -> list[dict]:
    metrics = ["failure_rate", *[f"failure_rate:{c}" for c in categories]]
    if labeled_before is None or labeled_after is None:
        return [_row(m, method, note="no human labels given") for m in metrics for method in ("hajek", "ppi")]
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
        rows.append(_row(metric, "hajek", sizes if skip else stats, skip))
        parts = [_ppi(f, side, wanted) for f, side in zip(frames, sides)] if not skip else []
        if skip or any(p is None for p in parts):
            rows.append(_row(metric, "ppi", sizes, skip or "no judge verdicts (or categories) on one side"))
            continue
        ppi, lam = _ppi_estimates(parts)
        rows.append(_row(metric, "ppi", compare_estimates(*ppi), f"lambda={lam:.2f}"))
    return rows


def proxy_gaming(rows: pl.DataFrame) -> tuple[bool, str | None]:
    """(flag, reason) for one change's rows (after BH; the rule is at the PROXY_* constants)."""
    automated = rows.filter(~pl.col("metric").str.starts_with("failure_rate"))  # one row per metric
    by_metric = {r["metric"]: r for r in automated.iter_rows(named=True)}
    better = [f"{m} {r['relative_effect']:+.0%}" for m in PROXY_QUALITY_METRICS
              if (r := by_metric.get(m)) and (r["relative_effect"] or 0) <= -PROXY_MIN_IMPROVEMENT]

    def significant(metric: str) -> dict | None:
        r = by_metric.get(metric)
        return r if r and r["p_adjusted"] is not None and r["p_adjusted"] < PROXY_ALPHA else None

    worse = []
    if (r := significant("response_chars")) and (r["relative_effect"] or 0) <= -PROXY_LENGTH_DROP:
        worse.append(f"response_chars {r['relative_effect']:+.0%}")
    for m in PROXY_SHAPE_METRICS:
        r = significant(m)
        if r and r["effect"] > 0 and (r["relative_effect"] is None or r["relative_effect"] >= PROXY_SHAPE_RISE):
            worse.append(f"{m} {r['mean_before']:.1%} -> {r['mean_after']:.1%}")
    if better and worse:
        return True, f"seems better ({', '.join(better)}) while {', '.join(worse)}"
    return False, None


def compare_sides(before: pl.DataFrame, after: pl.DataFrame, labeled_before: pl.DataFrame | None = None,
                  labeled_after: pl.DataFrame | None = None, *, categories: Sequence[str] | None = None,
                  reasons: Sequence[str] = ESCALATION_REASONS) -> pl.DataFrame:
    """Every metric's comparison of two sets of `automated_scores` rows, BH-adjusted, with the flag.

    labeled_*: labeled queue rows (trace_id, inclusion_prob, verdict, failure_category; stratum,
    week, agent_id, conversation_id, stratum_sample_size when available). Pass all labels of the
    side's weeks (or all labels): rows whose trace is not on the side are the domain's zeros.
    Columns: COMPARISON_SCHEMA without the change's context columns.
    """
    if categories is None:
        seen = set()
        for lab in (labeled_before, labeled_after):
            if lab is not None and "failure_category" in lab.columns:
                seen |= set(lab["failure_category"].drop_nulls().unique().to_list())
        categories = [*FAILURE_CATEGORIES, *sorted(seen - set(FAILURE_CATEGORIES))]
    rows = [*_label_rows(before, after, labeled_before, labeled_after, categories),
            _judge_row(before, after), *_turn_rows(before, after, reasons)]
    schema = {k: v for k, v in COMPARISON_SCHEMA.items() if k in rows[0] or k == "p_adjusted"}
    out = pl.DataFrame(rows, schema=schema).with_columns(pl.col(pl.Float64).fill_nan(None))  # no rows: null
    out = out.with_columns(p_adjusted=pl.Series(benjamini_hochberg(out["p_value"].to_list()), dtype=pl.Float64))
    flag, reason = proxy_gaming(out)
    return out.with_columns(proxy_gaming=pl.lit(flag), proxy_gaming_reason=pl.lit(reason, pl.String))


def compare_change(change: Mapping | pl.DataFrame, scores: pl.DataFrame,
                   labeled_before: pl.DataFrame | None = None, labeled_after: pl.DataFrame | None = None,
                   **options) -> pl.DataFrame:
    """The `impact_metrics` rows (COMPARISON_SCHEMA) of one `detect_changes` row.

    Sides from `changes.comparison_windows`; `options` go to `compare_sides`. labeled_*: the
    agent's labeled queue rows (all weeks; the same frame for both sides is right): the windows
    pick each side's labels, and the rest serve as the domain's zeros in the variance.
    """
    change = as_change(change)
    plan = window_plan(change, scores)
    rows = comparison_windows(change, scores, plan)
    out = compare_sides(rows.filter(pl.col("side") == "before"), rows.filter(pl.col("side") == "after"),
                        labeled_before, labeled_after, **options)
    plan_notes = "; ".join(plan.notes) or None
    return out.with_columns(
        *[pl.lit(change[c], pl.String).alias(c) for c in CONTEXT_COLUMNS],
        design=pl.lit(plan.design), window=pl.lit(plan.describe()),
        notes=pl.concat_str([pl.lit(plan_notes, pl.String), "notes"], separator="; ", ignore_nulls=True)
        .replace("", None),
    ).select(list(COMPARISON_SCHEMA))


# -- paired eval replay, input drift -------------------------------------------------------


def paired_pass_rate(before_pass, after_pass, alpha: float = ALPHA, power: float = POWER) -> dict:
    """Pass-rate difference of the same cases under two versions (eval replay).

    p: McNemar (statsmodels; exact binomial when fewer than 25 discordant pairs, else χ²
    with continuity correction). CI: Agresti–Min (2005) adjusted Wald for paired
    proportions (0.5 added to each cell), which keeps its coverage with few discordant
    pairs. MDE: (z_{1−α/2} + z_power)·SE with SE = √((n01 + n10)/n − effect²)/√n.
    """
    b, a = np.asarray(before_pass, bool), np.asarray(after_pass, bool)
    if b.shape != a.shape or b.ndim != 1 or len(b) == 0:
        raise ValueError("before_pass and after_pass must be equal-length, non-empty 1-d arrays")
    n = len(b)
    fixed, broke = int(np.sum(~b & a)), int(np.sum(b & ~a))
    table = [[int(np.sum(b & a)), broke], [fixed, int(np.sum(~b & ~a))]]
    p = float(mcnemar(table, exact=fixed + broke < 25, correction=True).pvalue)
    effect = (fixed - broke) / n
    f2, b2, n2 = fixed + 0.5, broke + 0.5, n + 2
    centre = (f2 - b2) / n2
    half = st.norm.ppf(1 - alpha / 2) * np.sqrt(max((f2 + b2) - (f2 - b2) ** 2 / n2, 0.0)) / n2
    se = np.sqrt(max((fixed + broke) / n - effect**2, 0.0) / n)
    mean_before = float(b.mean())
    return {
        "metric": "eval_pass_rate", "method": "mcnemar", "effect": effect,
        "relative_effect": effect / mean_before if mean_before else None,
        "ci_low": max(centre - half, -1.0), "ci_high": min(centre + half, 1.0), "p_value": p,
        "n_before": n, "n_after": n, "mde": float((st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)) * se),
        "mean_before": mean_before, "mean_after": float(a.mean()), "std_error": float(se),
        "notes": f"{fixed} fixed, {broke} broken of {n} paired cases",
    }


def population_stability_index(expected_counts: Mapping[str, float] | Sequence[float],
                               actual_counts: Mapping[str, float] | Sequence[float],
                               epsilon: float = PSI_EPSILON) -> float:
    """PSI = Σ (q − p)·ln(q/p) over bins, p and q the expected and actual shares.

    Mappings are aligned by key (a bin missing on one side has count 0); sequences by
    position. Shares below `epsilon` are raised to it, so a bin empty on one side adds a
    large but finite term. Read with PSI_MODERATE / PSI_LARGE.
    """
    if isinstance(expected_counts, Mapping) != isinstance(actual_counts, Mapping):
        raise TypeError("pass two mappings or two sequences")
    if isinstance(expected_counts, Mapping):
        keys = sorted(set(expected_counts) | set(actual_counts), key=str)
        e = np.array([expected_counts.get(k, 0) for k in keys], dtype=float)
        a = np.array([actual_counts.get(k, 0) for k in keys], dtype=float)
    else:
        e, a = np.asarray(expected_counts, dtype=float), np.asarray(actual_counts, dtype=float)
        if e.shape != a.shape:
            raise ValueError(f"bin counts differ in length: {e.shape} vs {a.shape}")
    if (e < 0).any() or (a < 0).any() or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total on each side")
    p, q = np.maximum(e / e.sum(), epsilon), np.maximum(a / a.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))
