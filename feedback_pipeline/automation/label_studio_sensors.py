"""The Label Studio sensor: annotations created or updated since the last tick become an
export file in labels/inbox/label_studio/ and start one label import.

Its cursor holds, per project, the last `updated_at` taken (`committed`) and the file
written from it that the warehouse has not imported yet (`pending`). A project's cursor
moves only once the warehouse holds that file's hash (in human_labels or
label_quarantine); until then the project is not fetched again, and the import is asked
for again every RETRY_TICKS ticks. A failed tick (Label Studio down, 5xx) keeps the
cursor as it was: the next tick fetches the same annotations and writes the same file
(named by content), so nothing is lost or counted twice.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb

from feedback_pipeline.automation.sensors import LABEL_IMPORT, _digest
from feedback_pipeline.label_studio_api import LabelStudioResource
from feedback_pipeline.labels.label_studio_sync import (is_pipeline_project, new_annotations,
                                                        with_annotator_emails, write_inbox_export)
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse import warehouse_tables

RETRY_TICKS = 10


def imported_hashes(home: FeedbackHome, shas: list[str]) -> set[str] | None:
    """Which of `shas` the warehouse holds as imported (None: the warehouse is busy now)."""
    if not home.warehouse_exists():
        return set()
    impatient = FeedbackHome(path=str(home.root), lock_timeout_s=0.0)  # a tick never waits for a run
    try:
        with impatient.warehouse() as con:
            tables = warehouse_tables(con)
            found: set[str] = set()
            for table in ("human_labels", "label_quarantine"):
                if table in tables:
                    found |= {r[0] for r in con.execute(
                        f"SELECT DISTINCT file_sha256 FROM {table} WHERE list_contains(?, file_sha256)",
                        [shas]).fetchall()}
            return found
    except duckdb.IOException:
        return None


@dg.sensor(target=LABEL_IMPORT, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def label_studio_sensor(context: dg.SensorEvaluationContext, home: FeedbackHome,
                        label_studio: LabelStudioResource):
    """New or updated Label Studio annotations → an inbox export file → one label import."""
    if not label_studio.enabled:
        return dg.SkipReason("LABEL_STUDIO_URL is not set: labels come as files only")
    state = json.loads(context.cursor) if context.cursor else {"committed": {}, "pending": {}}
    committed, pending = state["committed"], state["pending"]
    if pending:
        done = imported_hashes(home, [p["sha"] for p in pending.values()])
        if done is None:
            return dg.SkipReason("the warehouse is busy; Label Studio cursors stay until the next tick")
        for project in [p for p, item in pending.items() if item["sha"] in done]:
            committed[project] = pending.pop(project)["cursor"]
    requests, written, pulled = [], [], 0
    for project, item in pending.items():
        item["ticks"] = item.get("ticks", 0) + 1
        if item["ticks"] % RETRY_TICKS == 0:  # written, not imported yet: ask again
            requests.append(dg.RunRequest(run_key=f"label-studio-retry-{item['sha'][:16]}-{item['ticks']}",
                                          asset_selection=LABEL_IMPORT))
    client = label_studio.client()
    try:
        emails = None
        for project in sorted(client.projects(), key=lambda p: p["id"]):
            pid = str(project["id"])
            if pid in pending or not is_pipeline_project(project.get("title", "")):
                continue
            tasks, cursor = new_annotations(client.export(int(pid), all_tasks=False), committed.get(pid))
            if not tasks:
                continue
            emails = client.user_emails() if emails is None else emails
            path, sha = write_inbox_export(home.labels_inbox, int(pid), with_annotator_emails(tasks, emails))
            pending[pid] = {"sha": sha, "cursor": cursor, "file": path.name}
            written.append(sha)
            pulled += sum(len(t["annotations"]) for t in tasks)
            context.log.info(f"label studio: project {pid} '{project.get('title')}': "
                             f"{sum(len(t['annotations']) for t in tasks)} annotation(s) → {path.name}")
    finally:
        client.close()
    context.update_cursor(json.dumps(state, sort_keys=True))
    if written:
        # The inbox sensor would ask for the same import under the same key.
        requests.append(dg.RunRequest(run_key="labels-" + _digest(written), asset_selection=LABEL_IMPORT,
                                      tags={"label_studio/annotations_pulled": str(pulled),
                                            "label_studio/files": str(len(written))}))
    return requests or dg.SkipReason(f"no new annotations ({len(pending)} file(s) waiting for import)")


LABEL_STUDIO_SENSORS = [label_studio_sensor]
