"""Per annotator: how often they pass, how often they agree with the others, and their lean.

Feeds the `human_labels` metadata (who drifts, who is lenient). Agreement figures
over all raters are `agreement.py`'s.
"""

import polars as pl

from feedback_pipeline.labels.current import current_by_annotator


def annotator_stats(labels: pl.DataFrame, *, week_col: str | None = None) -> pl.DataFrame:
    """Per annotator: pass rate, agreement with the others' majority, and their bias.

    On items other annotators also labeled, the majority is taken over the *other*
    annotators only (leave-one-out, ties excluded), so a rater cannot agree with
    themselves. `pass_rate_gap` = own pass rate − the others' pass rate on the same
    items: a lenient rater is clearly positive, a careless one has low agreement.
    """
    groups = ["rubric_version"] + ([week_col] if week_col else [])
    item = groups + ["trace_id"]
    is_pass = (pl.col("verdict") == "pass").cast(pl.Int64)
    ann = current_by_annotator(labels, "annotation").with_columns(
        (pl.len().over(item) - 1).alias("_n_others"),
        (is_pass.sum().over(item) - is_pass).alias("_others_pass"),
    ).with_columns(
        pl.when(pl.col("_others_pass") * 2 > pl.col("_n_others")).then(pl.lit("pass"))
        .when(pl.col("_others_pass") * 2 < pl.col("_n_others")).then(pl.lit("fail"))
        .alias("_majority_others"),
    )
    shared = pl.col("_n_others") > 0
    return ann.group_by(groups + ["annotator_id"], maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("n_labels"),
        (pl.col("verdict") == "pass").mean().alias("pass_rate"),
        shared.sum().cast(pl.Int64).alias("n_shared"),
        (pl.col("verdict") == pl.col("_majority_others")).filter(pl.col("_majority_others").is_not_null())
        .mean().alias("agreement_with_majority"),
        (pl.col("verdict") == "pass").filter(shared).mean().alias("pass_rate_on_shared"),
        (pl.col("_others_pass").filter(shared).sum() / pl.col("_n_others").filter(shared).sum())
        .alias("others_pass_rate_on_shared"),
    ).with_columns(
        (pl.col("pass_rate_on_shared") - pl.col("others_pass_rate_on_shared")).alias("pass_rate_gap"),
    ).sort(groups + ["annotator_id"])
