"""A change's `impact_metrics` rows: every metric's before/after comparison, BH-adjusted, flagged.

`compare_sides` compares two sets of `automated_scores` rows (plus human labels);
`compare_change` picks the sides of one `release_changes` row (`windows.py`) and adds the
change's context; `impact_table` does every detected change (and, when given, its paired
replay) and shapes the result as the `ImpactMetrics` table. The metrics themselves live in
`turn_metrics.py` and `label_metrics.py`, the flag in `proxy_gaming.py`.
"""

from collections.abc import Callable, Mapping, Sequence

import polars as pl

from feedback_pipeline.frames import conform, empty_frame, polars_schema
from feedback_pipeline.impact.effects import benjamini_hochberg
from feedback_pipeline.impact.label_metrics import categories_of, label_rows
from feedback_pipeline.impact.proxy_gaming import proxy_gaming
from feedback_pipeline.impact.schemas import CHANGE_CONTEXT, ImpactMetrics
from feedback_pipeline.impact.turn_metrics import judge_row, turn_rows
from feedback_pipeline.impact.windows import as_change, comparison_windows, window_plan
from feedback_pipeline.ingest.contract import ESCALATION_REASONS


def compare_sides(before: pl.DataFrame, after: pl.DataFrame, labeled_before: pl.DataFrame | None = None,
                  labeled_after: pl.DataFrame | None = None, *, categories: Sequence[str] | None = None,
                  reasons: Sequence[str] = ESCALATION_REASONS) -> pl.DataFrame:
    """Every metric's comparison of two sets of `automated_scores` rows, BH-adjusted, with the flag.

    labeled_*: labeled queue rows (trace_id, inclusion_prob, verdict, failure_category; stratum,
    week, agent_id, conversation_id, stratum_sample_size, rubric_version when available). Pass all
    labels of the side's weeks (or all labels): rows whose trace is not on the side are the
    domain's zeros. categories: default `label_metrics.categories_of` the labels.
    Columns: the `ImpactMetrics` columns without the change's context, design and window.
    """
    if categories is None:
        categories = categories_of(labeled_before, labeled_after)
    rows = [*label_rows(before, after, labeled_before, labeled_after, categories),
            judge_row(before, after), *turn_rows(before, after, reasons)]
    schema = {k: v for k, v in polars_schema(ImpactMetrics).items() if k in rows[0] or k == "p_adjusted"}
    out = pl.DataFrame(rows, schema=schema).with_columns(pl.col(pl.Float64).fill_nan(None))  # no rows: null
    out = out.with_columns(p_adjusted=pl.Series(benjamini_hochberg(out["p_value"].to_list()), dtype=pl.Float64))
    flag, reason = proxy_gaming(out)
    return out.with_columns(proxy_gaming=pl.lit(flag), proxy_gaming_reason=pl.lit(reason, pl.String))


def compare_change(change: Mapping | pl.DataFrame, scores: pl.DataFrame,
                   labeled_before: pl.DataFrame | None = None, labeled_after: pl.DataFrame | None = None,
                   **options) -> pl.DataFrame:
    """The `impact_metrics` rows (ImpactMetrics columns) of one `detect_changes` row.

    Sides from `windows.comparison_windows`; `options` go to `compare_sides`. labeled_*: the
    agent's labeled queue rows (all weeks; the same frame for both sides is right): the windows
    pick each side's labels, and the rest serve as the domain's zeros in the variance.
    """
    change = as_change(change)
    plan = window_plan(change, scores)
    rows = comparison_windows(change, scores, plan)
    out = compare_sides(rows.filter(pl.col("side") == "before"), rows.filter(pl.col("side") == "after"),
                        labeled_before, labeled_after, **options)
    plan_notes = "; ".join(plan.notes) or None
    return out.with_columns(
        *[pl.lit(change[c], pl.String).alias(c) for c in CHANGE_CONTEXT],
        design=pl.lit(plan.design), window=pl.lit(plan.describe()),
        notes=pl.concat_str([pl.lit(plan_notes, pl.String), "notes"], separator="; ", ignore_nulls=True)
        .replace("", None),
    ).select(list(polars_schema(ImpactMetrics)))


def impact_table(changes: pl.DataFrame, scores: pl.DataFrame, labeled: pl.DataFrame | None,
                 replay: Callable[[dict], pl.DataFrame] | None = None) -> pl.DataFrame:
    """The `impact_metrics` table: per detected change, its comparison rows (each agent's own
    scores and labels) and, when `replay` is given, its paired replay rows."""
    parts = []
    for change in changes.filter(pl.col("detected")).iter_rows(named=True):
        agent_id = change["agent_id"]
        mine = labeled.filter(pl.col("agent_id") == agent_id) if labeled is not None else None
        parts.append(compare_change(change, scores.filter(pl.col("agent_id") == agent_id), mine, mine))
        if replay is not None:
            parts.append(replay(change))
    if not parts:
        return empty_frame(ImpactMetrics)
    return conform(pl.concat(parts, how="diagonal_relaxed"), ImpactMetrics)
