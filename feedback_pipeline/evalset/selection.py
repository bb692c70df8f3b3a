"""How many new cases a week may add, and which: the size budget, the per-user cap,
the stratified pick within the budget, and the canary top-up.

Pure Polars over candidate and snapshot rows; dedup is `dedup.py`, the assembly of a
snapshot from these steps is `snapshot.py`.
"""

import polars as pl

from feedback_pipeline.evalset.config import EvalSetConfig


def target_size(n_previous: int, config: EvalSetConfig) -> int:
    """Cases the agent's snapshot should hold this week (the first week's target, then growth)."""
    target = (config.initial_target if not n_previous
              else max(config.initial_target, n_previous + config.growth_per_week))
    return min(target, config.max_cases)


def skip_reason(max_new_per_user: int | None) -> pl.Expr:
    """"near_duplicate", "per_user_cap" (the user's cases beyond the cap, by case_id) or null;
    over `_user` and `duplicate_of`."""
    dup = pl.col("duplicate_of").is_not_null()
    return (pl.when(dup).then(pl.lit("near_duplicate"))
            .when(pl.int_range(pl.len()).over(["_user", dup], order_by="case_id")
                  >= (max_new_per_user or 2**62))
            .then(pl.lit("per_user_cap")).alias("reason"))


def stratified(carried: pl.DataFrame, fresh: pl.DataFrame, budget: int,
               pass_weight: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(chosen, over budget): weighted round-robin over strata (each failure category, "pass").

    A case's turn in its stratum is (cases of the stratum already in the set + its rank
    + 1) / weight; the lowest turns win. So the set moves toward balance, a rare category
    is taken as long as it has cases, and one user does not go first twice in a row.
    """
    stratum = (pl.when(pl.col("verdict") == "pass").then(pl.lit("pass"))
               .otherwise(pl.col("failure_category").fill_null("uncategorized")))
    have = carried.group_by(stratum.alias("_stratum")).agg(pl.len().alias("_have"))
    ranked = (fresh.with_columns(stratum.alias("_stratum"))
              .with_columns(pl.int_range(pl.len()).over(["_stratum", "_user"], order_by="case_id")
                            .alias("_urank"))
              .with_columns(pl.int_range(pl.len()).over("_stratum", order_by=["_urank", "source", "case_id"])
                            .alias("_rank"))
              .join(have, on="_stratum", how="left")
              .with_columns(((pl.col("_have").fill_null(0) + pl.col("_rank") + 1)
                             / pl.when(pl.col("_stratum") == "pass").then(pass_weight).otherwise(1.0))
                            .alias("_turn"))
              .sort("_turn", "_stratum", "_rank"))
    return ranked.head(budget), ranked.slice(budget)


def fill_canary(rows: pl.DataFrame, size: int) -> pl.DataFrame:
    """Canary cases stay; if fewer than `size`, the earliest other test cases join them."""
    need = size - int(rows["canary"].sum())
    if need <= 0:
        return rows
    picks = (rows.filter((pl.col("split") == "test") & ~pl.col("canary"))
             .sort("first_seen_week", "case_id").head(need)["case_id"])
    return rows.with_columns((pl.col("canary") | pl.col("case_id").is_in(picks.implode())).alias("canary"))
