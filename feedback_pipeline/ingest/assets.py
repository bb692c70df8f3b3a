"""raw_traces and ingest_quarantine: a week of landing records, loaded or quarantined."""


from datetime import date

import dagster as dg

from feedback_pipeline.checks import column_schema, markdown_table, only_selected, pandera_check
from feedback_pipeline.ingest.manifest import files_sharing_trace_ids, fingerprints, plan_reads, record_files
from feedback_pipeline.ingest.landing import landing_files
from feedback_pipeline.ingest.parse import parse_landing
from feedback_pipeline.ingest.storage import create_raw_traces
from feedback_pipeline.ingest.schemas import IngestQuarantine, RawTraces
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse import replace_week, transaction

_COMMON = dict(group_name="ingest", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "ingest"})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_traces",
            description="Every agent turn of the week from the landing files, typed, de-duplicated, with its source file and line.",
            metadata={"dagster/column_schema": column_schema(RawTraces), "partition_expr": "week"},
            **_COMMON,
        ),
        dg.AssetSpec(
            "ingest_quarantine",
            description="Landing records of the week that broke the contract, each with file, line, raw text and the reason.",
            metadata={"dagster/column_schema": column_schema(IngestQuarantine), "partition_expr": "week"},
            **_COMMON,
        ),
    ],
    partitions_def=weekly,
    pool="warehouse",
    can_subset=True,
)
def ingest(context: dg.AssetExecutionContext, home: FeedbackHome):
    """Parse the landing files that can hold this week's records (new or changed files,
    files indexed with this week, files sharing a trace_id with it), then replace this
    week of both tables and update the file manifest in one transaction."""
    yield from only_selected(context, _ingest(context, home))


def _ingest(context: dg.AssetExecutionContext, home: FeedbackHome):
    week = date.fromisoformat(context.partition_key)
    with home.warehouse() as con:
        current = fingerprints(home.landing, landing_files(home.landing)[0])
        plan = plan_reads(con, current, week)
        parsed = parse_landing(con, home.landing, only=plan.parse)
        sharing = files_sharing_trace_ids(con, week, plan.parse)
        if sharing:  # rare: a trace_id re-sent in another week's file; read both copies
            parsed = parse_landing(con, home.landing, only=plan.parse + sharing)
        with transaction(con):
            record_files(con, current, plan.changed)
            create_raw_traces(con, "SELECT * FROM parsed_traces")
            # Row order in raw_traces carries no meaning (every reader orders or keys by
            # trace_id), and an order-free insert runs on all cores and writes its row
            # groups as it goes: about 2x faster, and no second write at COMMIT.
            con.execute("SET preserve_insertion_order = false")
            loaded = replace_week(
                con, "raw_traces", week,
                "SELECT * FROM parsed_traces WHERE week = ?", [week],
                atomic=False,
            )
            con.execute("RESET preserve_insertion_order")  # the quarantine keeps file order
            quarantined = replace_week(
                con, "ingest_quarantine", week,
                "SELECT *, now()::TIMESTAMPTZ AS quarantined_at FROM parsed_quarantine WHERE week = ? "
                "ORDER BY source_file, source_line", [week],
                atomic=False,
            )
        per_file = con.execute("""
            SELECT source_file,
                   count(*) FILTER (WHERE what = 'loaded') AS loaded,
                   count(*) FILTER (WHERE what = 'duplicate') AS duplicates_dropped,
                   count(*) FILTER (WHERE what = 'quarantined') AS quarantined,
                   count(*) AS read
            FROM (SELECT source_file, 'loaded' AS what FROM parsed_keys WHERE week = $1
                  UNION ALL SELECT source_file, 'duplicate' FROM parsed_duplicates WHERE week = $1
                  UNION ALL SELECT source_file, 'quarantined' FROM parsed_quarantine WHERE week = $1)
            GROUP BY source_file ORDER BY source_file
        """, [week]).pl()
        reasons = con.execute("""
            SELECT field, count(*) AS n, any_value(reason) AS example
            FROM parsed_quarantine WHERE week = ? GROUP BY field ORDER BY n DESC
        """, [week]).pl()
    duplicates = int(per_file["duplicates_dropped"].sum()) if per_file.height else 0
    read = int(per_file["read"].sum()) if per_file.height else 0
    context.log.info(
        f"week {week}: read {read} = loaded {loaded} + duplicates {duplicates} + quarantined {quarantined}"
    )
    accounting = {
        "read": read,
        "loaded": loaded,
        "duplicates_dropped": duplicates,
        "quarantined": quarantined,
        "files_scanned": len(parsed.files),
        "files_skipped_unchanged (indexed, nothing this week)": plan.unchanged_skipped,
        "files_read_for_shared_trace_ids": len(sharing),
        "files_with_records_this_week": per_file.height,
        "per_file": dg.MetadataValue.md(markdown_table(per_file)),
        "skipped_files (not .jsonl/.jsonl.gz/.parquet)": dg.MetadataValue.json(parsed.skipped_files[:100]),
    }
    yield dg.MaterializeResult(
        asset_key="raw_traces",
        metadata={"dagster/row_count": loaded, **accounting},
    )
    yield dg.MaterializeResult(
        asset_key="ingest_quarantine",
        metadata={
            "dagster/row_count": quarantined,
            **accounting,
            "reasons_by_field": dg.MetadataValue.md(markdown_table(reasons)),
        },
    )


raw_traces_schema_check = pandera_check("raw_traces", RawTraces)
ingest_quarantine_schema_check = pandera_check("ingest_quarantine", IngestQuarantine)


@dg.asset(
    group_name="ingest", kinds={"duckdb"}, owners=["team:data-platform"], tags={"stage": "ingest"},
    pool="warehouse",
    description="Which weeks the landing files hold, per file fingerprint; its `weeks_changed` tells "
                "the landing sensors exactly which weeks to ingest.",
)
def landing_scan(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """Read the timestamps of new, changed or removed landing files: the weeks they touch."""
    from feedback_pipeline.ingest.scan import scan_landing

    files, skipped = landing_files(home.landing)
    with home.warehouse() as con, transaction(con):
        scan = scan_landing(con, home.landing, files)
    context.log.info(f"landing scan: {len(scan.files_changed)} changed, {len(scan.files_removed)} removed "
                     f"file(s) touch weeks {scan.weeks_changed}")
    return dg.MaterializeResult(metadata={
        "weeks_changed": dg.MetadataValue.json(scan.weeks_changed),
        "files_changed": len(scan.files_changed), "files_removed": len(scan.files_removed),
        "files_unchanged": scan.files_unchanged, "files_skipped": len(skipped),
    })
