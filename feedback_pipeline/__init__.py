"""feedback_pipeline: LLM agent traces and feedback -> scores, an honest annotation
queue, labels, immutable eval sets and impact figures (Dagster + DuckDB + Polars)."""

import warnings

# Weekly schema checks are partitioned asset checks, a Dagster "preview" feature we use
# on purpose (a check per week is what a data engineer reads); say so once, not per import.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
