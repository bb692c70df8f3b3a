"""Pandera (polars) schema of `quality_estimates`."""

import pandera.polars as pa
import polars as pl

from feedback_pipeline.rubrics import known_rubrics


class QualityEstimates(pa.DataFrameModel):
    """Failure rates per agent-week with honest CIs, beside the naive rates."""

    week: pl.Date = pa.Field()
    agent_id: str = pa.Field()
    # Categories come from the rubric version the estimate was made under (any version
    # on disk), so the metric names a category by pattern, not by one version's list.
    metric: str = pa.Field(str_matches=r"^failure_rate(:[a-z][a-z0-9_]*)?$")
    method: str = pa.Field(isin=["hajek", "horvitz_thompson", "ppi", "naive_thumbs", "naive_sample"])
    estimate: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    ci_low: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    ci_high: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    std_error: pl.Float64 = pa.Field(nullable=True, ge=0)
    n_labeled: pl.Int64 = pa.Field(ge=0)
    n_population: pl.Int64 = pa.Field(ge=0)
    rubric_versions: str = pa.Field(nullable=True)
    notes: str = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check(error="metric names a failure category that no rubric version on disk has")
    def category_in_a_rubric(cls, data: pa.PolarsData) -> pl.LazyFrame:
        known = sorted({c for categories in known_rubrics().values() for c in categories})
        category = pl.col("metric").str.strip_prefix("failure_rate").str.strip_prefix(":")
        return data.lazyframe.select((category == "") | category.is_in(known))

    @pa.dataframe_check(error="ci_low <= estimate <= ci_high")
    def ordered(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ok = (pl.col("ci_low") <= pl.col("estimate") + 1e-12) & (pl.col("estimate") <= pl.col("ci_high") + 1e-12)
        return data.lazyframe.select(ok.fill_null(True))
