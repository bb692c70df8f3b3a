"""Per-stratum sizes and weighted moments of the labels and the judge, after merging unlabeled strata.

Labels may cover part of the queue: labeled items are treated as a random subset of
each stratum's queue items (the queue order interleaves strata, random within
each), so a label's weight is 1/π · q_h/ℓ_h, q_h = `stratum_sample_size` (queue
rows of the stratum), ℓ_h = labels in it. Within-stratum ratios do not need the
factor. A fail whose category is outside `categories` counts in failure_rate only.

Edge cases: a stratum with 0 labels is merged into the next labeled stratum in
priority order (the previous one if none follows): its N_h joins that stratum's,
which assumes a similar rate (noted; the queue order labels every stratum's first
item first, so this needs fewer labels than strata). A stratum with 1 label keeps it; its Jeffreys
interval for n = 1 is wide, so the estimate's CI widens honestly (noted; for
`std_error` its variance is centred on the overall estimate, R survey's "adjust").
No labels in an agent-week: rows with null estimate and CI and a note, so the gap
is visible. All labels equal: the per-stratum margins keep the CI open.

Sums only; the estimates and intervals built from them are `design_based` and `ppi`.
"""

import numpy as np
import polars as pl

from feedback_pipeline.sampling.strata import stratum_priority


def merge_unlabeled(pop: pl.DataFrame, lab: pl.DataFrame) -> tuple[dict[str, str], str | None]:
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


def stratum_stats(pop, lab, strata, metrics) -> dict[str, np.ndarray]:
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
