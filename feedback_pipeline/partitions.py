"""Weekly partitions: Monday 00:00 UTC weeks; a week exists once it has closed."""

import os

import dagster as dg

# Read when the code location loads (partitions are part of the definitions, not of a
# run); the default reaches back far enough for real history.
START_DATE = os.environ.get("FEEDBACK_PIPELINE_START_DATE", "2025-01-06")

weekly = dg.WeeklyPartitionsDefinition(start_date=START_DATE, day_offset=1, timezone="UTC")
