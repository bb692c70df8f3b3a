"""One factory for every table's blocking Pandera check (the PUDL pattern).

The check loads the table (one week for weekly assets) from the warehouse, runs
`schema.validate(lazy=True)`, and turns `SchemaErrors` into a failed
`AssetCheckResult` that shows the failing cases, instead of raising.
"""


from typing import Callable

import dagster as dg
import pandera.polars as pa
import polars as pl

from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse import table_exists

SCHEMA_CHECK = "schema_matches"


def validate_frame(schema: type[pa.DataFrameModel], frame: pl.DataFrame) -> dg.AssetCheckResult:
    """Pure: the check result of validating `frame` against `schema`."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        summary = cases.group_by("column", "check").len().sort("len", descending=True)
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "rows_checked": frame.height,
                "failures": cases.height,
                "failures_by_check": dg.MetadataValue.md(markdown_table(summary.head(20))),
                "examples": dg.MetadataValue.md(markdown_table(cases.head(20).cast(pl.String))),
            },
        )
    return dg.AssetCheckResult(passed=True, metadata={"rows_checked": frame.height})


def column_schema(schema: type[pa.DataFrameModel]) -> dg.TableSchema:
    """The Pandera columns as Dagster's `dagster/column_schema`, so the UI lists them."""
    columns = schema.to_schema().columns
    return dg.TableSchema(columns=[
        dg.TableColumn(
            name=name,
            type=str(col.dtype),
            description=col.description,
            constraints=dg.TableColumnConstraints(nullable=col.nullable, unique=col.unique),
        )
        for name, col in columns.items()
    ])


def pandera_check(
    asset_key: str,
    schema: type[pa.DataFrameModel],
    *,
    partitioned: bool = True,
    table: str | None = None,
    load: Callable[..., pl.DataFrame] | None = None,
) -> dg.AssetChecksDefinition:
    """A blocking check that `asset_key`'s warehouse table matches `schema`."""
    table = table or asset_key

    @dg.asset_check(
        asset=asset_key,
        name=SCHEMA_CHECK,
        blocking=True,
        pool="warehouse",  # reads the warehouse: queue with the writers instead of racing the lock
        partitions_def=weekly if partitioned else None,
        description=f"Blocking: every row of {table} matches its Pandera schema.",
        # Runs launched by automation include only the checks that ask for it: run with
        # every materialization of the table, or the assets below wait for it forever.
        automation_condition=dg.AutomationCondition.any_deps_updated(),
    )
    def _check(context: dg.AssetCheckExecutionContext, home: FeedbackHome) -> dg.AssetCheckResult:
        with home.warehouse() as con:
            if load is not None:
                frame = load(con, context)
            elif not table_exists(con, table):
                return dg.AssetCheckResult(passed=False, metadata={"error": f"table {table} does not exist"})
            elif partitioned:
                frame = con.execute(f"SELECT * FROM {table} WHERE week = ?", [context.partition_key]).pl()
            else:
                frame = con.execute(f"SELECT * FROM {table}").pl()
        return validate_frame(schema, frame)

    return _check


def markdown_table(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "(none)"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * frame.width + "\n"
    rows = "".join("| " + " | ".join(str(v).replace("|", "\\|")[:120] for v in row) + " |\n"
                   for row in frame.iter_rows())
    return header + rows


def only_selected(context, results):
    """For multi-assets that always write all their tables together (one transaction):
    report only the assets and checks selected in this run (`can_subset=True`), so
    `--select raw_traces` works while the tables stay consistent."""
    selected_checks = context.selected_asset_check_keys
    for result in results:
        if result.asset_key not in context.selected_asset_keys:
            continue
        checks = [c for c in (result.check_results or [])
                  if dg.AssetCheckKey(result.asset_key, c.check_name) in selected_checks]
        yield dg.MaterializeResult(asset_key=result.asset_key, metadata=result.metadata,
                                   check_results=checks)
