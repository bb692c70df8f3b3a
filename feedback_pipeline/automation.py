"""Jobs, the weekly schedule and the sensors on landing/ and labels/inbox/.

Sensors only decide *what* to run (cursor by file hash / fingerprint); the assets do
the work, so a file is never imported twice and a late file re-runs only its weeks.
"""

import hashlib
import json
from datetime import datetime, timezone

import dagster as dg
import duckdb

from feedback_pipeline.ingest.contract import timestamp_sql
from feedback_pipeline.files import file_sha256
from feedback_pipeline.ingest.parse import landing_files
from feedback_pipeline.labels.inbox import inbox_files
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.weeks import current_week, week_sql

WEEKLY_GROUPS = ("ingest", "scoring", "sampling")

weekly_refresh = dg.define_asset_job(
    "weekly_refresh",
    selection=dg.AssetSelection.groups(*WEEKLY_GROUPS, "estimates", "evalset")
    | dg.AssetSelection.assets("weekly_report"),
    partitions_def=weekly,
    description="A closed week end to end: raw_traces -> automated_scores -> annotation_queue -> "
                "quality_estimates -> eval_set_snapshots -> weekly_report.",
    # A judge endpoint that is briefly down fails the step; retry the run from failure.
    tags={"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"},
)
import_labels = dg.define_asset_job(
    "import_labels",
    selection=dg.AssetSelection.assets("human_labels", "judge_calibration").required_multi_asset_neighbors(),
    description="Import new label files from labels/inbox and refresh judge calibration.",
)

refresh_cross_week = dg.define_asset_job(
    "refresh_cross_week",
    selection=(dg.AssetSelection.groups("labels", "impact")
               - dg.AssetSelection.assets("weekly_report")).required_multi_asset_neighbors(),
    description="Tables that span weeks: label import, judge calibration, release changes, impact, loop health.",
)

weekly_schedule = dg.build_schedule_from_partitioned_job(
    weekly_refresh, hour_of_day=2, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


cross_week_schedule = dg.ScheduleDefinition(
    job=refresh_cross_week, cron_schedule="0 1 * * 1", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Mondays 01:00 UTC, before the weekly refresh at 02:00 reads the new labels' effects.",
)


@dg.sensor(job=import_labels, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING)
def label_inbox_sensor(context: dg.SensorEvaluationContext, home: FeedbackHome):
    """New label files in labels/inbox (by content hash) trigger one import."""
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    hashes = {file_sha256(p) for p in inbox_files(home.labels_inbox)}
    new = sorted(hashes - seen)
    if not new:
        return dg.SkipReason(f"no new label files ({len(hashes)} already seen)")
    context.update_cursor(json.dumps(sorted(seen | hashes)))
    return dg.RunRequest(run_key="labels-" + hashlib.sha256("".join(new).encode()).hexdigest()[:16])


def _file_fingerprint(path) -> str:
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def weeks_in_files(paths) -> set[str]:
    """Closed weeks that records in these landing files fall in (bad lines ignored here:
    the ingest run quarantines them)."""
    this_week = current_week()
    weeks: set[str] = set()
    with duckdb.connect() as con:
        con.execute("SET TimeZone='UTC'")
        for path in paths:
            if path.name.endswith(".parquet"):
                sql = f"SELECT DISTINCT {week_sql(timestamp_sql('timestamp'))} FROM read_parquet(?)"
            else:
                timestamp = timestamp_sql("json_extract_string(TRY_CAST(line AS JSON), '$.timestamp')")
                sql = (f"SELECT DISTINCT {week_sql(timestamp)} FROM read_csv(?, columns={{'line': 'VARCHAR'}}, "
                       "delim='\x1f', quote='', escape='', header=false, auto_detect=false, ignore_errors=true)")
            try:
                found = con.execute(sql, [str(path)]).fetchall()
            except duckdb.Error:
                continue
            weeks |= {w.isoformat() for (w,) in found if w is not None and w < this_week}
    return weeks


@dg.sensor(job=weekly_refresh, minimum_interval_seconds=120,
           default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, home: FeedbackHome):
    """New or changed landing files re-run the closed weeks their records fall in."""
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    files, _ = landing_files(home.landing)
    current = {_file_fingerprint(p): p for p in files}
    changed = [p for fp, p in current.items() if fp not in seen]
    if not changed:
        return dg.SkipReason("no new landing files")
    partitions = set(weekly.get_partition_keys())
    weeks = sorted(weeks_in_files(changed) & partitions)
    context.update_cursor(json.dumps(sorted(current)))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return [dg.RunRequest(partition_key=w, run_key=f"landing-{w}-{stamp}") for w in weeks] or \
        dg.SkipReason(f"{len(changed)} changed file(s), no closed week in them")
