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

Labels may cover part of the queue: labeled items are treated as a random subset of
each stratum's queue items (the queue order interleaves strata, random within
each), so a label's weight is 1/π · q_h/ℓ_h, q_h = `stratum_sample_size` (queue
rows of the stratum), ℓ_h = labels in it. Within-stratum ratios do not need the
factor. A fail whose category is outside `categories` counts in failure_rate only.

Intervals (95 %): stratified MOVER, "method of variance estimates recovery" (Zou &
Donner 2008; for sums of binomial proportions Zou, Huang & Zhang 2009): per stratum,
a Jeffreys interval for ȳ_h (statsmodels; recommended with Wilson for small n by
Brown, Cai & DasGupta 2001, with their boundary rule) on the effective size
ℓ*_h = Kish(w)·(N_h−1)/(N_h−ℓ_h) (Kish's n for unequal weights, with the
finite-population correction: a fully labeled stratum is known exactly); then
L = θ̂ − sqrt(Σ W_h²(ȳ_h − l_h)²), U = θ̂ + sqrt(Σ W_h²(u_h − ȳ_h)²).
Why not Wald, or Wilson/Korn–Graubard on one effective n for the whole estimate: a
rare category usually has zero hits in the big, lightly sampled `unrated` stratum,
where the linearization variance is then 0 and both collapse around the oversampled
strata (in benchmarks/coverage.py Wald covers 58 % on policy_violation, 83–88 % on
the other rare categories; Korn–Graubard-style Wilson on p̂(1−p̂)/V̂ 75 %); Kish's n
from weights alone ignores the gain of stratification and over-covers common rates.
Per-stratum intervals keep an honest upper margin for "0 of ℓ_h" and tend to the
stratified Wald interval when counts are large. (Per-stratum Wilson also covers,
but is 10–30 % wider.)
For PPI the within-stratum term ȳ_h − λ·f̄_h combines the margins of ȳ_h and f̄_h
with their correlation, corrected as in Newcombe (1998, method 10) so that perfect
agreement on few labels does not collapse the interval; f̄_h's margin is 0 when f
is constant over the stratum's population (then f̄_h is known).
`std_error` is the stratified linearization SE (with-replacement within stratum,
times the finite-population correction 1 − ℓ_h/N_h), for readers who need one.

Edge cases: a stratum with 0 labels is merged into the next labeled stratum in
priority order (the previous one if none follows): its N_h joins that stratum's,
which assumes a similar rate (noted; the queue order labels every stratum's first
item first, so this needs fewer labels than strata). A stratum with 1 label keeps it; its Jeffreys
interval for n = 1 is wide, so the estimate's CI widens honestly (noted; for
`std_error` its variance is centred on the overall estimate, R survey's "adjust").
No labels in an agent-week: rows with null estimate and CI and a note, so the gap
is visible. All labels equal: the per-stratum margins keep the CI open.
"""

from collections.abc import Sequence

import numpy as np
import polars as pl
from statsmodels.stats.proportion import proportion_confint

from feedback_pipeline.sampling.design import assign_strata, stratum_priority

FAILURE_CATEGORIES: tuple[str, ...] = (
    "could_not_answer", "wrong_information", "tone_wrong", "tool_failed", "policy_violation", "other",
)
OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "week": pl.Date, "agent_id": pl.String, "metric": pl.String, "method": pl.String,
    "estimate": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "std_error": pl.Float64,
    "n_labeled": pl.Int64, "n_population": pl.Int64, "rubric_versions": pl.String, "notes": pl.String,
}
LABELED_COLUMNS = ("trace_id", "stratum", "inclusion_prob", "stratum_sample_size", "verdict", "failure_category")


def estimate_quality(
    population: pl.DataFrame,
    labeled: pl.DataFrame,
    categories: Sequence[str] = FAILURE_CATEGORIES,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """Failure rate and per-category rates per agent-week, every method (OUTPUT_SCHEMA).

    population: `automated_scores` rows of the agent-weeks (a `stratum` column is
    added with `assign_strata` if missing). labeled: queue rows joined with one
    adjudicated human label each (verdict "pass"/"fail", failure_category); rows
    with a null verdict are queue items not labeled yet and are skipped.
    """
    if "stratum" not in population.columns:
        population = assign_strata(population)
    metrics = ["failure_rate", *[f"failure_rate:{c}" for c in categories]]
    population = population.with_columns(_metric_exprs("judge_verdict", "judge_failure_category", metrics, population))
    labels = _prepare_labels(population, labeled, metrics)
    by_agent_week = labels.partition_by("agent_id", "week", as_dict=True)
    rows: list[dict] = []
    for (agent_id, week), pop in population.group_by("agent_id", "week", maintain_order=True):
        lab = by_agent_week.get((agent_id, week), labels.clear())
        rows.extend(_agent_week_rows(pop, lab, metrics, alpha, week, agent_id))
    return pl.DataFrame(rows, schema=OUTPUT_SCHEMA | {"week": population.schema["week"]}).sort(
        "week", "agent_id", "metric", "method"
    )


def _metric_exprs(verdict: str, category: str, metrics: list[str], frame: pl.DataFrame) -> list[pl.Expr]:
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


def _prepare_labels(population: pl.DataFrame, labeled: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    done = labeled_rows(labeled)
    extra = [c for c in ("rubric_version",) if c in done.columns]
    keep = done.select(*LABELED_COLUMNS, *extra)
    joined = keep.join(
        population.select("trace_id", "agent_id", "week"), on="trace_id", how="left",
    )
    unknown = joined.filter(pl.col("agent_id").is_null())
    if unknown.height:
        raise ValueError(f"{unknown.height} labeled traces not in population, e.g. {unknown['trace_id'][0]}")
    return joined.with_columns(_metric_exprs("verdict", "failure_category", metrics, joined))


def _agent_week_rows(pop, lab, metrics, alpha, week, agent_id) -> list[dict]:
    n_pop, n_lab = pop.height, lab.height
    versions = None
    if "rubric_version" in lab.columns and lab["rubric_version"].drop_nulls().len():
        versions = ",".join(sorted(lab["rubric_version"].drop_nulls().unique().to_list()))
    base = {"week": week, "agent_id": agent_id, "n_labeled": n_lab, "n_population": n_pop, "rubric_versions": versions}
    out = [_thumbs_row(pop, alpha) | base | {"metric": "failure_rate"}]
    if n_lab == 0:
        for m in metrics:
            for method in ("hajek", "horvitz_thompson", "ppi", "naive_sample"):
                out.append(base | _null_row("no human labels in this agent-week") | {"metric": m, "method": method})
        return out
    strata, notes = _merge_unlabeled(pop, lab)
    stats = _stratum_stats(pop, lab, strata, metrics)
    for j, m in enumerate(metrics):
        out.append(base | _naive_sample_row(lab[f"y:{m}"].to_numpy(), alpha) | {"metric": m})
        column = {k: v[:, j] if v.ndim == 2 else v for k, v in stats.items()}
        for row in _design_rows(column | {"has_judge": stats["has_judge"][j]}, alpha):
            row["notes"] = "; ".join(filter(None, [notes, row["notes"]])) or None
            out.append(base | row | {"metric": m})
    return out


def _merge_unlabeled(pop: pl.DataFrame, lab: pl.DataFrame) -> tuple[dict[str, str], str | None]:
    """Map every population stratum to a labeled one; strata without labels join a neighbour."""
    order = sorted(pop["stratum"].unique().to_list(), key=lambda h: (stratum_priority(h), h))
    counts = dict(lab.group_by("stratum").len().iter_rows())
    unknown = set(counts) - set(order)
    if unknown:
        raise ValueError(f"labeled strata not in population: {sorted(unknown)}")
    target, notes = {}, []
    for i, h in enumerate(order):
        if counts.get(h, 0):
            target[h] = h
            continue
        after = [g for g in order[i + 1:] if counts.get(g, 0)]
        before = [g for g in order[:i] if counts.get(g, 0)]
        target[h] = (after or before[::-1])[0]
        notes.append(f"{h} (0 labels) merged into {target[h]}")
    notes += [f"{h} has 1 label" for h, c in sorted(counts.items()) if c == 1]
    return target, "; ".join(notes) or None


def _stratum_stats(pop, lab, strata, metrics) -> dict[str, np.ndarray]:
    """Per labeled stratum (after merging), sizes (H,) and weighted moments (H, metrics)."""
    f_cols = [f"f:{m}" for m in metrics]
    merged = pop.with_columns(_h=pl.col("stratum").replace_strict(strata))
    # A trace the judge did not score gets its stratum's judged mean (see _ppi).
    merged = merged.with_columns(pl.col(c).fill_null(pl.col(c).mean().over("_h")).fill_null(pl.col(c).mean()) for c in f_cols)
    pop_stats = merged.group_by("_h").agg(
        big_n=pl.len(),
        *[pl.col(c).mean().alias(f"F_mean{j}") for j, c in enumerate(f_cols)],
        *[pl.col(c).var(ddof=0).fill_null(0.0).alias(f"F_var{j}") for j, c in enumerate(f_cols)],
    )
    original_n = dict(pop.group_by("stratum").len().iter_rows())
    lab = lab.join(merged.select("trace_id", *[pl.col(c).alias(f"_f{j}") for j, c in enumerate(f_cols)]), on="trace_id", how="left")
    w = 1 / pl.col("inclusion_prob")
    w_ht = w * pl.col("stratum_sample_size") / pl.len().over("stratum")  # labels: a random part of the queue
    moments = []
    for j, m in enumerate(metrics):
        y, f = pl.col(f"y:{m}"), pl.col(f"_f{j}").fill_null(0.0)
        sums = {"swy": w * y, "sw2y": w**2 * y, "swf": w * f, "swf2": w * f**2, "swyf": w * y * f,
                "sw2f": w**2 * f, "sw2f2": w**2 * f**2, "sw2yf": w**2 * y * f, "ht": w_ht * y, "ht2": w_ht**2 * y}
        moments += [e.sum().alias(f"{k}{j}") for k, e in sums.items()]
    s = (
        lab.group_by("stratum")
        .agg(ell=pl.len(), sw=w.sum(), sw2=(w**2).sum(), *moments)
        .join(pop_stats, left_on="stratum", right_on="_h")
        .with_columns(n_orig=pl.col("stratum").replace_strict(original_n, return_dtype=pl.Int64))
        .sort("stratum")
    )
    out = {c: s[c].to_numpy().astype(float) for c in ("ell", "sw", "sw2", "big_n", "n_orig")}
    for k in ("swy", "sw2y", "swf", "swf2", "swyf", "sw2f", "sw2f2", "sw2yf", "ht", "ht2", "F_mean", "F_var"):
        out[k] = np.column_stack([s[f"{k}{j}"].to_numpy().astype(float) for j in range(len(metrics))])
    out["weight"] = out["big_n"] / pop.height
    out["has_judge"] = np.array([pop[c].drop_nulls().len() > 0 for c in f_cols])
    return out


def _design_rows(a: dict[str, np.ndarray], alpha: float) -> list[dict]:
    """hajek, horvitz_thompson and ppi rows for one metric from its stratum statistics."""
    weight, ell, big_n = a["weight"], a["ell"], a["big_n"]
    ybar, fbar = a["swy"] / a["sw"], a["swf"] / a["sw"]
    kish = a["sw"] ** 2 / a["sw2"]
    fpc = np.where(ell >= big_n, 0.0, 1 - ell / big_n)
    n_eff = np.where(ell >= big_n, np.inf, kish * (big_n - 1) / np.maximum(big_n - ell, 1e-12))
    # Linearization pieces: Σ w̃²(y−ȳ)² etc., w̃ = w/Σw; ℓ/(ℓ−1) makes them unbiased.
    scale = np.where(ell > 1, ell / np.maximum(ell - 1, 1), np.nan) / a["sw"] ** 2
    var_y = scale * (a["sw2y"] - 2 * ybar * a["sw2y"] + ybar**2 * a["sw2"])
    var_f = scale * (a["sw2f2"] - 2 * fbar * a["sw2f"] + fbar**2 * a["sw2"])
    cov = scale * (a["sw2yf"] - fbar * a["sw2y"] - ybar * a["sw2f"] + ybar * fbar * a["sw2"])
    hajek = float(weight @ ybar)
    ht_means = a["ht"] / a["n_orig"]
    ht = float(weight @ ht_means)
    with np.errstate(divide="ignore", invalid="ignore"):  # HT: variance of the stratum total Σ z, z = w·y
        var_ht = (ell / (ell - 1)) * (a["ht2"] - a["ht"] ** 2 / ell) / a["n_orig"] ** 2
    rows = [
        _mover_row("hajek", hajek, weight, ybar, n_eff, alpha, _se(weight, fpc, var_y, ybar, hajek, ell)),
        _mover_row("horvitz_thompson", ht, weight, np.clip(ht_means, 0, 1), n_eff, alpha,
                   _se(weight, fpc, var_ht, ht_means, ht, ell)),
    ]
    if not a["has_judge"]:
        rows.append(_null_row("no judge verdicts in this agent-week") | {"method": "ppi"})
    else:
        rows.append(_ppi(a, weight, ybar, fbar, var_y, var_f, cov, fpc, n_eff, kish, alpha))
    return rows


def _se(weight, fpc, var_h, mean_h, overall, ell) -> float:
    lonely = (mean_h - overall) ** 2  # R survey's "adjust" for a stratum with one label
    with np.errstate(invalid="ignore"):
        v = np.where(ell > 1, var_h, lonely)
    return float(np.sqrt(np.sum(weight**2 * fpc * np.nan_to_num(v))))


def _jeffreys(p: np.ndarray, n_eff: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Jeffreys limits for proportions p on (possibly fractional, possibly infinite) sizes.

    With Brown, Cai & DasGupta's (2001) boundary rule: lower 0 at p = 0, upper 1 at p = 1.
    """
    p = np.clip(p, 0, 1)
    finite = np.isfinite(n_eff)
    n = np.where(finite, n_eff, 1.0)
    lo, hi = proportion_confint(p * n, n, alpha=alpha, method="jeffreys")
    lo, hi = np.where(p == 0, 0.0, lo), np.where(p == 1, 1.0, hi)
    return np.where(finite, lo, p), np.where(finite, hi, p)


def _mover_row(method, estimate, weight, means, n_eff, alpha, se) -> dict:
    """Stratified MOVER: per-stratum Jeffreys margins added in quadrature (strata independent)."""
    lo, hi = _jeffreys(means, n_eff, alpha)
    low = estimate - np.sqrt(np.sum(weight**2 * (means - lo) ** 2))
    high = estimate + np.sqrt(np.sum(weight**2 * (hi - means) ** 2))
    return _row(method, estimate, low, high, se)


def _ppi(a, weight, ybar, fbar, var_y, var_f, cov, fpc, n_eff, kish, alpha) -> dict:
    """Stratified PPI++ on the Hájek rectifier: Σ_h W_h (ȳ_h − λ(f̄_h − F̄_h)).

    Hand-written: no maintained library implements PPI++ under a stratified design
    with design weights (ppi_py assumes i.i.d. labels). λ minimises the
    linearization variance, λ = Σ W_h²(1−f_h)Ĉov_h(y, f) / Σ W_h²(1−f_h)V̂_h(f),
    clipped to [0, 1] as in PPI++ (λ = 0 is the Hájek estimate, 1 is plain PPI).
    f is the judge's fail verdict (with that category, for a category metric).
    Traces the judge did not score (errors, or outside the judge's own sample) get
    f = their stratum's judged mean: f stays a fixed function of automated_scores,
    so F̄ is known exactly over all traffic and the estimator stays design-unbiased
    for every fixed λ. Of "the two variances" of PPI, the judge's term is 0 here
    (F̄ is a census in this finite-population view, like the FPC of the others), so
    the CI is the rectifier's. The judge gains little where strata already split on
    its verdict (`low_score`): it helps through variation of f within strata.
    """
    ok = np.isfinite(var_f) & np.isfinite(cov)  # strata with ≥ 2 labels
    denom = np.sum((weight**2 * fpc * var_f)[ok])
    tuned = float(np.clip(np.sum((weight**2 * fpc * cov)[ok]) / denom, 0, 1)) if denom > 0 else 0.0
    y_lo, y_hi = _jeffreys(ybar, n_eff, alpha)
    f_lo, f_hi = _jeffreys(fbar, n_eff, alpha)
    known = a["F_var"] <= 1e-15  # f constant over the stratum: f̄_h = F̄_h, no margin
    f_lo, f_hi = np.where(known, fbar, f_lo), np.where(known, fbar, f_hi)
    sy = np.sqrt(np.maximum(ybar * (1 - ybar), 0))
    sf = np.sqrt(np.maximum(a["swf2"] / a["sw"] - fbar**2, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = (a["swyf"] / a["sw"] - ybar * fbar) / (sy * sf)
        phi = np.where(phi > 0, np.maximum(phi - 1 / (2 * kish * sy * sf), 0), phi)  # Newcombe
    phi = np.clip(np.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0), -1, 1)

    lam = tuned
    estimate = float(weight @ (ybar - lam * (fbar - a["F_mean"])))
    down = (ybar - y_lo) ** 2 + lam**2 * (f_hi - fbar) ** 2 - 2 * phi * lam * (ybar - y_lo) * (f_hi - fbar)
    up = (y_hi - ybar) ** 2 + lam**2 * (fbar - f_lo) ** 2 - 2 * phi * lam * (y_hi - ybar) * (fbar - f_lo)
    low = estimate - np.sqrt(np.sum(weight**2 * np.maximum(down, 0)))
    high = estimate + np.sqrt(np.sum(weight**2 * np.maximum(up, 0)))
    var_r = np.nan_to_num(np.maximum(var_y + lam**2 * var_f - 2 * lam * cov, 0))
    row = _row("ppi", estimate, low, high, float(np.sqrt(np.sum(weight**2 * fpc * var_r))))
    row["notes"] = "; ".join(filter(None, [f"lambda={lam:.3f}", row["notes"]]))
    return row


def _row(method: str, estimate: float, low: float, high: float, se: float) -> dict:
    """Clip to [0, 1] keeping ci_low ≤ estimate ≤ ci_high (PPI and HT can leave [0, 1])."""
    clipped = min(max(estimate, 0.0), 1.0)
    note = f"estimate {estimate:.4f} clipped to [0, 1]" if clipped != estimate else None
    return {
        "method": method, "estimate": clipped, "ci_low": min(max(low, 0.0), clipped),
        "ci_high": max(min(high, 1.0), clipped), "std_error": se, "notes": note,
    }


def _null_row(note: str) -> dict:
    return {"estimate": None, "ci_low": None, "ci_high": None, "std_error": None, "notes": note}


def _naive_sample_row(y: np.ndarray, alpha: float) -> dict:
    n, k = len(y), float(np.sum(y))
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return _row("naive_sample", k / n, lo, hi, float(np.sqrt(k / n * (1 - k / n) / n)))


def _thumbs_row(pop: pl.DataFrame, alpha: float) -> dict:
    rated = pop.filter(pl.col("thumbs").is_in(["up", "down"]))
    if rated.height == 0:
        return {"method": "naive_thumbs"} | _null_row("no rated traces")
    k, n = int((rated["thumbs"] == "down").sum()), rated.height
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    row = _row("naive_thumbs", k / n, lo, hi, float(np.sqrt(k / n * (1 - k / n) / n)))
    row["notes"] = f"{n} rated traces"
    return row
