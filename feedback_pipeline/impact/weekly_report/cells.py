"""Small pieces the report's tables and figures share: cell formatting, labels, row filters.

No HTML layout (that is `tables.py` / `page.py`) and no drawing (`figures.py`).
"""

import html
import math
import re
from datetime import date

import pandera.polars as pa
import polars as pl

from feedback_pipeline.frames import empty_frame

ALPHA = 0.05
ESTIMATE_METHODS = {"hajek": ("Hájek (labels)", "tab:blue"), "ppi": ("PPI++ (labels + judge)", "tab:green"),
                    "naive_thumbs": ("naive thumbs-down share", "tab:red")}


def frame_or_empty(df: pl.DataFrame | None, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """The frame, or an empty one with the table's columns when None or column-less."""
    return df if df is not None and df.width else empty_frame(model)


def upto(df: pl.DataFrame, column: str, week: date) -> pl.DataFrame:
    """Rows up to the report week (all rows when the column is missing)."""
    return df.filter(pl.col(column).cast(pl.Date) <= week) if column in df.columns else df


def fmt(value, kind: str = "num") -> str:
    """A cell's text: "pct" (12.3 %), "pp" (+1.2 pp), "pp_size" (1.2 pp), "p" (0.012, <1e-4), or plain."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "pp":
        return f"{100 * value:+.1f} pp"
    if kind == "pp_size":
        return f"{100 * value:.1f} pp"
    if kind == "p":
        return f"{value:.2g}" if value >= 1e-4 else "<1e-4"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def html_table(rows: list[dict], flag_column: str | None = None) -> str:
    """An HTML table of text cells (numbers right-aligned; rows with `flag_column` set in red)."""
    if not rows:
        return "<p><em>No rows.</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for row in rows:
        cls = ' class="flag"' if flag_column and row.get(flag_column) else ""
        cells = "".join(f'<td class="num">{html.escape(v)}</td>' if v[:1] in "+-0123456789<" else
                        f"<td>{html.escape(v)}</td>" for v in row.values())
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def first(df: pl.DataFrame, column: str):
    """The first non-null value of a column, None if there is none (or no such column)."""
    values = df[column].drop_nulls() if column in df.columns else pl.Series([])
    return values[0] if len(values) else None


def slug(change_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", change_id).strip("-") or "change"


def is_rate(metric: str) -> bool:
    return metric.split(":", 1)[0].endswith("_rate")


def metric_label(row: dict) -> str:
    return row["metric"] if row["method"] in ("mean", None) else f"{row['metric']} [{row['method']}]"
