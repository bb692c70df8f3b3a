"""The Dagster pools that warehouse writers queue in; their limits are the instance's
(`dagster.yaml`, the UI's Deployment → Concurrency, or `feedback-pipeline pools`).

`WEEKLY`: steps that replace one week of their tables and read no other week of them.
`SERIAL`: tables spanning weeks, and the eval set (a week's snapshot grows the last one).
On a DuckDB file both are the one pool `warehouse` with limit 1 (one writing process per
file). On a DuckLake with a PostgreSQL catalog they are two: `warehouse` admits N writers
(weeks of a backfill in parallel), `warehouse_serial` stays at 1.
Read when the code location loads, like the partitions' start date.
"""

from feedback_pipeline.warehouse_location import pools_are_split

WEEKLY = "warehouse"
SERIAL = "warehouse_serial" if pools_are_split() else WEEKLY
