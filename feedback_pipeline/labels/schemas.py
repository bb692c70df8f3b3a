"""Pandera (polars) schemas of the labels stage's tables."""

import pandera.polars as pa
import polars as pl

_UTC = pl.Datetime(time_unit="us", time_zone="UTC")


class HumanLabels(pa.DataFrameModel):
    """Every accepted label with provenance; superseded ones stay as history."""

    label_id: str = pa.Field(unique=True)
    trace_id: str = pa.Field()
    annotator_id: str = pa.Field()
    verdict: str = pa.Field(isin=["pass", "fail"])
    failure_category: str = pa.Field(nullable=True)
    rubric_version: str = pa.Field()
    labeled_at: _UTC = pa.Field()
    notes: str = pa.Field(nullable=True)
    source: str = pa.Field(isin=["annotation", "escalation", "adjudication"])
    source_file: str = pa.Field(nullable=True, description="null for escalation labels")
    source_row: pl.Int64 = pa.Field(nullable=True)
    file_sha256: str = pa.Field(nullable=True)
    imported_at: _UTC = pa.Field()
    is_current: bool = pa.Field()
    superseded_by: str = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check(error="a fail needs a category and a pass has none")
    def category_matches_verdict(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("verdict") == "fail") == pl.col("failure_category").is_not_null())


class LabelQuarantine(pa.DataFrameModel):
    """Label rows (or whole files) that could not be accepted, with the reason."""

    source_file: str = pa.Field()
    source_row: pl.Int64 = pa.Field(nullable=True)
    file_sha256: str = pa.Field(nullable=True)
    trace_id: str = pa.Field(nullable=True)
    annotator_id: str = pa.Field(nullable=True)
    field: str = pa.Field(nullable=True)
    reason: str = pa.Field()
    raw_record: str = pa.Field(nullable=True)
    quarantined_at: _UTC = pa.Field()

    class Config:
        strict = True


class LabelAgreement(pa.DataFrameModel):
    """Inter-annotator agreement per rubric version, week and field."""

    rubric_version: str = pa.Field()
    field: str = pa.Field(isin=["verdict", "failure_category"])
    metric: str = pa.Field(isin=["cohens_kappa", "krippendorff_alpha"])
    value: pl.Float64 = pa.Field(nullable=True, ge=-1, le=1)
    percent_agreement: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    n_items: pl.Int64 = pa.Field(ge=0)

    class Config:
        strict = False  # rater names, CI and week ride along


class JudgeCalibration(pa.DataFrameModel):
    """Judge vs human agreement per month and rubric version."""

    month: str = pa.Field(str_matches=r"^\d{4}-\d{2}$")
    rubric_version: str = pa.Field()
    n_compared: pl.Int64 = pa.Field(gt=0)
    accuracy: pl.Float64 = pa.Field(ge=0, le=1)
    cohens_kappa: pl.Float64 = pa.Field(nullable=True, ge=-1, le=1)
    judge_bias: pl.Float64 = pa.Field(ge=-1, le=1)
    drift: bool = pa.Field()

    class Config:
        strict = False
