"""Sensors: what new files and new labels change, mapped to exactly the runs that must follow.

Each tick is cheap (it lists files or reads the instance's event log, never parses a
landing file) and every `run_key` is a pure function of what changed (file
fingerprints, content hashes, a materialization's storage id), so a re-evaluated tick
never launches a run twice.
"""

from __future__ import annotations

import hashlib

import dagster as dg

from feedback_pipeline.ingest.listing import landing_files
from feedback_pipeline.labels.inbox import inbox_files
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome

LANDING_SCAN = dg.AssetKey("landing_scan")
HUMAN_LABELS = dg.AssetKey("human_labels")
INGEST = [dg.AssetKey("raw_traces"), dg.AssetKey("ingest_quarantine")]
LABEL_IMPORT = [HUMAN_LABELS, dg.AssetKey("label_quarantine"), dg.AssetKey("label_agreement")]
# What a week's new labels change; the report and cross-week tables follow by automation.
LABELED_WEEK = [dg.AssetKey("quality_estimates")]


def _digest(items) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def landing_fingerprints(home: FeedbackHome) -> dict[str, str]:
    """{relative path: size:mtime} of every landing file: a stat per file, no reading."""
    files, _ = landing_files(home.landing)
    out = {}
    for path in files:
        stat = path.stat()
        out[str(path.relative_to(home.landing))] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return out


@dg.sensor(target=[LANDING_SCAN], minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, home: FeedbackHome):
    """New, changed or removed landing files start one scan (which finds the weeks they touch)."""
    # The cursor is a digest of every file's fingerprint: which files changed is the scan's
    # job (it keeps them per file in the warehouse), the sensor only notices that some did.
    current = landing_fingerprints(home)
    digest = _digest(f"{name}={fingerprint}" for name, fingerprint in current.items())
    if digest == (context.cursor or _digest([])):  # an empty landing folder needs no scan
        return dg.SkipReason(f"no change in {len(current)} landing file(s)")
    context.update_cursor(digest)
    return dg.RunRequest(run_key=f"landing-scan-{digest}", asset_selection=[LANDING_SCAN])


def _new_materializations(context: dg.SensorEvaluationContext, key: dg.AssetKey):
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=True).records
    if records:
        context.update_cursor(str(records[-1].storage_id))
    return records


def _weeks_in(record) -> list[str]:
    metadata = record.asset_materialization.metadata if record.asset_materialization else {}
    value = metadata.get("weeks_changed")
    return list(value.value) if value is not None else []


def requests_for_weeks(records, assets: list[dg.AssetKey], prefix: str) -> list[dg.RunRequest]:
    """One run per closed week named in the records' `weeks_changed` metadata, keyed by the
    materialization that named it (so the same change never runs twice)."""
    closed = set(weekly.get_partition_keys())
    requests = {}
    for record in records:
        for week in _weeks_in(record):
            if week in closed:
                requests[week] = dg.RunRequest(run_key=f"{prefix}-{week}-{record.storage_id}",
                                               partition_key=week, asset_selection=assets)
    return [requests[w] for w in sorted(requests)]


@dg.sensor(target=INGEST, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_weeks_sensor(context: dg.SensorEvaluationContext):
    """After a landing scan: ingest exactly the closed weeks whose files changed."""
    requests = requests_for_weeks(_new_materializations(context, LANDING_SCAN), INGEST, "ingest")
    return requests or dg.SkipReason("no week touched by new landing files")


@dg.sensor(target=LABEL_IMPORT, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def label_inbox_sensor(context: dg.SensorEvaluationContext, home: FeedbackHome):
    """New or changed label files in labels/inbox start one import. As for landing files, a
    stat per file and a digest for cursor (a tick reads no file and the cursor does not grow
    with the inbox): the import itself skips the content it has imported before."""
    current = {}
    for path in inbox_files(home.labels_inbox):
        stat = path.stat()
        current[str(path.relative_to(home.labels_inbox))] = f"{stat.st_size}:{stat.st_mtime_ns}"
    digest = _digest(f"{name}={fingerprint}" for name, fingerprint in current.items())
    if digest == (context.cursor or _digest([])):
        return dg.SkipReason(f"no change in {len(current)} label file(s)")
    context.update_cursor(digest)
    return dg.RunRequest(run_key=f"labels-{digest}", asset_selection=LABEL_IMPORT)


@dg.sensor(target=LABELED_WEEK, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def labeled_weeks_sensor(context: dg.SensorEvaluationContext):
    """After a label import: refresh the estimates of exactly the weeks whose labels changed."""
    requests = requests_for_weeks(_new_materializations(context, HUMAN_LABELS), LABELED_WEEK, "estimates")
    return requests or dg.SkipReason("no week's labels changed")


# Labels first: an import that runs before a new week is ingested changes only the weeks
# it labels (that week's escalation labels follow its queue, through automation).
SENSORS = [label_inbox_sensor, labeled_weeks_sensor, landing_sensor, landing_weeks_sensor]
