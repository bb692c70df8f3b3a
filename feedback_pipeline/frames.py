"""Polars frames shaped by a table's Pandera model: the model is the table, said once.

Dtypes, empty frames and casts derive from `Model.to_schema()`; no module restates a
table's columns. The Dagster side of the same model (column schema, checks) lives in
`checks.py`.
"""

from __future__ import annotations

from functools import cache

import pandera.polars as pa
import polars as pl


@cache
def polars_schema(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """The model's columns and Polars dtypes, in the model's order."""
    return {name: column.dtype.type for name, column in model.to_schema().columns.items()}


def empty_frame(model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """A zero-row frame with the model's columns and types (an empty week)."""
    return pl.DataFrame(schema=polars_schema(model))


def conform(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """`frame` with exactly the model's columns, in its order, cast to its dtypes
    (a column the frame lacks comes back as nulls of the right type)."""
    schema = polars_schema(model)
    if not frame.width:  # a frame with no columns has no rows either (a lone literal would make one)
        return empty_frame(model)
    return frame.select([
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ])
