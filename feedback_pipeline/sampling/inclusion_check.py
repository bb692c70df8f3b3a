"""The `inclusion_probabilities_valid` check: is every π in the queue the design's exact π?

Reads only the queue's own design columns; no draws, no I/O (the asset turns the
list of problems into an asset-check result).
"""

import polars as pl


def check_inclusion(queue: pl.DataFrame) -> list[str]:
    """Problems with a queue's inclusion probabilities (empty list: all good).

    Exact, to 1e-9: π in (0, 1]; π = user_cap_prob · n_h / N_h; each stratum has
    `stratum_sample_size` rows q_h ≤ n_h ≤ N_h. Σ 1/π over a stratum is not N_h
    exactly once the cap is involved: Σ 1/π − N_h = (N_h/n_h)·(Σ_kept (1/e_i − 1)
    − (n_h − q_h)), a mean-zero difference between the up-weighting of capped
    users' kept draws and the draws the cap removed. So the tolerance is
    (N_h/n_h)·max(Σ_kept (1/e_i − 1), n_h − q_h), read off the queue: 0 (exact,
    up to 1e-9·N_h) where no capped user was drawn, and never more than the
    capped users' own share otherwise. A wrong N_h, a lost row or a π not built
    from this design shows up as a violation.
    """
    problems = []
    bad = queue.filter(
        pl.col("inclusion_prob").is_null() | (pl.col("inclusion_prob") <= 0) | (pl.col("inclusion_prob") > 1)
    )
    if bad.height:
        problems.append(f"{bad.height} rows with inclusion_prob outside (0, 1], e.g. {bad['trace_id'][0]}")
    implied = pl.col("user_cap_prob") * pl.col("stratum_draws") / pl.col("stratum_population")
    inconsistent = queue.filter((pl.col("inclusion_prob") - implied).abs() > 1e-9)
    if inconsistent.height:
        problems.append(f"{inconsistent.height} rows where inclusion_prob != user_cap_prob·n_h/N_h")
    per_stratum = queue.group_by("week", "agent_id", "stratum").agg(
        rows=pl.len(),
        weight_sum=(1 / pl.col("inclusion_prob")).sum(),
        upweight=(1 / pl.col("user_cap_prob") - 1).sum(),
        q=pl.col("stratum_sample_size").first(),
        n=pl.col("stratum_draws").first(),
        big_n=pl.col("stratum_population").first(),
        distinct=pl.struct("stratum_sample_size", "stratum_draws", "stratum_population").n_unique(),
    )
    for row in per_stratum.sort("week", "agent_id", "stratum").iter_rows(named=True):
        where = f"{row['agent_id']} {row['week']} {row['stratum']}"
        q, n, big_n, total = row["q"], row["n"], row["big_n"], row["weight_sum"]
        if row["distinct"] != 1 or row["rows"] != q or not 1 <= q <= n <= big_n:
            problems.append(f"{where}: sizes inconsistent (rows={row['rows']}, q_h={q}, n_h={n}, N_h={big_n})")
            continue
        tolerance = big_n / n * max(row["upweight"], n - q) + 1e-9 * big_n
        if abs(total - big_n) > tolerance:
            problems.append(f"{where}: Σ1/π = {total:.2f}, stratum_population = {big_n} (tolerance {tolerance:.2f})")
    return problems
