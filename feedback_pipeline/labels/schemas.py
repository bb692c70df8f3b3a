"""Pandera (polars) schemas of the labels stage's tables: each model is its table, said once.

Polars dtypes, empty frames and the Dagster column schemas derive from these models
(`feedback_pipeline.frames`, `checks.column_schema`); no other module restates a table.
The shapes the import passes between its steps (text candidates, accepted rows before
they get their history columns) are in `shapes.py`.
"""

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
    source_line: pl.Int64 = pa.Field(nullable=True, description=(
        "CSV: data row (header not counted); JSONL: physical line; Label Studio: annotation ordinal"))
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
    source_line: pl.Int64 = pa.Field(nullable=True, description="null when the whole file was refused")
    file_sha256: str = pa.Field(nullable=True)
    trace_id: str = pa.Field(nullable=True)
    annotator_id: str = pa.Field(nullable=True)
    field: str = pa.Field(nullable=True)
    reason: str = pa.Field()
    raw_text: str = pa.Field(nullable=True, description="the row as read (JSON), or the raw line")
    quarantined_at: _UTC = pa.Field()

    class Config:
        strict = True


class LabelAgreement(pa.DataFrameModel):
    """Inter-annotator agreement per rubric version, week and field (κ per pair, α over all)."""

    rubric_version: str = pa.Field()
    field: str = pa.Field(isin=["verdict", "failure_category"])
    metric: str = pa.Field(isin=["cohens_kappa", "krippendorff_alpha"])
    rater_a: str = pa.Field(nullable=True, description="null for α (all raters)")
    rater_b: str = pa.Field(nullable=True)
    value: pl.Float64 = pa.Field(nullable=True, ge=-1, le=1)
    ci_low: pl.Float64 = pa.Field(nullable=True, ge=-1, le=1)
    ci_high: pl.Float64 = pa.Field(nullable=True, ge=-1, le=1)
    percent_agreement: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    n_items: pl.Int64 = pa.Field(ge=0)
    n_raters: pl.Int64 = pa.Field(ge=0)
    n_ratings: pl.Int64 = pa.Field(ge=0)

    class Config:
        strict = False  # the grouping column the caller asks for (week) rides along after rubric_version


class JudgeCalibration(pa.DataFrameModel):
    """Judge vs human agreement per month and rubric version."""

    month: str = pa.Field(str_matches=r"^\d{4}-\d{2}$")
    rubric_version: str = pa.Field()
    n_compared: pl.Int64 = pa.Field(gt=0)
    accuracy: pl.Float64 = pa.Field(ge=0, le=1)
    cohens_kappa: pl.Float64 = pa.Field(nullable=True, ge=-1, le=1)
    judge_fail_rate: pl.Float64 = pa.Field(ge=0, le=1)
    human_fail_rate: pl.Float64 = pa.Field(ge=0, le=1)
    judge_bias: pl.Float64 = pa.Field(ge=-1, le=1)
    category_accuracy_on_agreed_fails: pl.Float64 = pa.Field(nullable=True, ge=0, le=1)
    confusion: str = pa.Field(description="JSON list of (human, judge) verdict/category cells with counts")
    accuracy_change: pl.Float64 = pa.Field(nullable=True, description="vs the previous month")
    kappa_change: pl.Float64 = pa.Field(nullable=True)
    drift: bool = pa.Field()

    class Config:
        strict = True
