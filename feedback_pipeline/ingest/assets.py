"""raw_traces and ingest_quarantine: a week of landing records, loaded or quarantined."""


from datetime import date

import dagster as dg

from feedback_pipeline import pools
from feedback_pipeline.checks import column_schema, markdown_table, only_selected, pandera_check
from feedback_pipeline.ingest.accounting import totals, week_accounting
from feedback_pipeline.ingest.listing import landing_files
from feedback_pipeline.ingest.manifest import parse_week
from feedback_pipeline.ingest.storage import write_week
from feedback_pipeline.ingest.schemas import IngestQuarantine, LandingScan, RawTraces
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse import replace_week, transaction, write_attempts

_COMMON = dict(group_name="ingest", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "ingest"})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_traces",
            description="Every agent turn of the week from the landing files, typed, de-duplicated, with its source file and line.",
            metadata={"dagster/column_schema": column_schema(RawTraces)},
            **_COMMON,
        ),
        dg.AssetSpec(
            "ingest_quarantine",
            description="Landing records of the week that broke the contract, each with file, line, raw text and the reason.",
            metadata={"dagster/column_schema": column_schema(IngestQuarantine)},
            **_COMMON,
        ),
    ],
    partitions_def=weekly,
    pool=pools.WEEKLY,
    can_subset=True,
)
def ingest(context: dg.AssetExecutionContext, home: FeedbackHome):
    """Parse the landing files that can hold this week's records (new or changed files,
    files indexed with this week, files sharing a trace_id with it) — contract files and
    tracing exports alike — then replace this week of both tables and update the file
    manifest in one transaction."""
    yield from only_selected(context, _ingest(context, home))


def _ingest(context: dg.AssetExecutionContext, home: FeedbackHome):
    week = date.fromisoformat(context.partition_key)
    with home.warehouse() as con:
        read = parse_week(con, home.landing, week)
        for attempt in write_attempts():  # again only if a DuckLake commit raced another writer's
            with attempt, transaction(con):
                # replace_week passed from here: the crash-safety test hooks this module's name.
                loaded, quarantined = write_week(con, read, week, replace=replace_week)
        per_file, reasons = week_accounting(con, week)
    count = totals(per_file)
    context.log.info(f"week {week}: read {count['read']} = loaded {loaded} + duplicates "
                     f"{count['duplicates_dropped']} + quarantined {quarantined}")
    accounting = {
        "read": count["read"], "loaded": loaded, "duplicates_dropped": count["duplicates_dropped"],
        "quarantined": quarantined,
        "files_scanned": len(read.parsed.files),
        "files_skipped_unchanged (indexed, nothing this week)": read.plan.unchanged_skipped,
        "files_read_for_shared_trace_ids": len(read.sharing),
        "files_with_records_this_week": per_file.height,
        "per_file": dg.MetadataValue.md(markdown_table(per_file)),
        "skipped_files (not a landing file name)": dg.MetadataValue.json(read.parsed.skipped_files[:100]),
    }
    if read.parsed.spans is not None:  # tracing exports among the files read
        spans = read.parsed.spans
        accounting["formats"] = dg.MetadataValue.json(
            {k: v for k, v in sorted(read.parsed.formats.items()) if v != "contract"})
        accounting["source_rows (rows_read = in_turns + duplicates + held + quarantined)"] = \
            dg.MetadataValue.md(markdown_table(spans))
        accounting["source_rows_held (root not arrived, week open)"] = int(spans["held"].sum())
    yield dg.MaterializeResult(asset_key="raw_traces", metadata={"dagster/row_count": loaded, **accounting})
    yield dg.MaterializeResult(asset_key="ingest_quarantine", metadata={
        "dagster/row_count": quarantined, **accounting,
        "reasons_by_field": dg.MetadataValue.md(markdown_table(reasons))})


raw_traces_schema_check = pandera_check("raw_traces", RawTraces)
ingest_quarantine_schema_check = pandera_check("ingest_quarantine", IngestQuarantine)


@dg.asset(
    group_name="ingest", kinds={"duckdb"}, owners=["team:data-platform"], tags={"stage": "ingest"},
    pool=pools.SERIAL,
    description="Which weeks the landing files hold, per file fingerprint; its `weeks_changed` tells "
                "the landing sensors exactly which weeks to ingest.",
    metadata={"dagster/column_schema": column_schema(LandingScan)},
)
def landing_scan(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Read the timestamps of new, changed or removed landing files: the weeks they touch."""
    from feedback_pipeline.ingest.scan import scan_landing

    files, skipped = landing_files(home.landing)
    with home.warehouse() as con:
        for attempt in write_attempts():
            with attempt, transaction(con):
                scan = scan_landing(con, home.landing, files)
    context.log.info(f"landing scan: {len(scan.files_changed)} changed, {len(scan.files_removed)} removed "
                     f"file(s) touch weeks {scan.weeks_changed}")
    return dg.MaterializeResult(metadata={
        "weeks_changed": dg.MetadataValue.json(scan.weeks_changed),
        "files_changed": len(scan.files_changed), "files_removed": len(scan.files_removed),
        "files_unchanged": scan.files_unchanged, "files_skipped": len(skipped),
    })


landing_scan_schema_check = pandera_check("landing_scan", LandingScan, partitioned=False)
