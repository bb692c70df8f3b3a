"""Column groups of `automated_scores` that the scoring code and later stages name.

Derived from the Pandera models, never restated: the carried columns are those that
`automated_scores` shares with `raw_traces` (`ingest.schemas.RawTraces`), the judge's
are its `judge_*` columns, and the deterministic scores are the rest. Constants only.
"""

import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.scoring.schemas import AutomatedScores

_SCORES = polars_schema(AutomatedScores)
_TRACES = polars_schema(RawTraces)

# Columns copied from raw_traces so downstream stages need not join back.
CARRIED_FROM_TRACES: tuple[str, ...] = tuple(c for c in _SCORES if c in _TRACES)
# LLM judge (null when not judged).
JUDGE: tuple[str, ...] = tuple(c for c in _SCORES if c.startswith("judge_"))
# Deterministic scorers (vectorized, every trace).
DETERMINISTIC: tuple[str, ...] = tuple(c for c in _SCORES if c not in CARRIED_FROM_TRACES + JUDGE)
# The judge's columns and their Polars dtypes, in the table's order.
JUDGE_SCHEMA: dict[str, pl.DataType] = {c: _SCORES[c] for c in JUDGE}
