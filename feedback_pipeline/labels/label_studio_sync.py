"""Syncing with a Label Studio server: queue tasks in, annotations out as export files.

Push: the tasks of a file export (`label_studio_tasks.json`, already PII-redacted) go
into one project per agent and rubric version, each keyed by trace_id + rubric version,
so a re-push adds only what is missing. Pull: a project's JSON export, cut to the
annotations created or updated after a cursor, becomes an export file in the label
inbox, where the file import applies every validation, quarantine and supersede rule.

No Dagster here (the assets and the sensor call these); the HTTP calls are
`label_studio_api`'s and the task format `label_studio`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from feedback_pipeline.files import atomic_write
from feedback_pipeline.label_studio import label_config_xml
from feedback_pipeline.label_studio_api import LabelStudioClient
from feedback_pipeline.rubrics import RUBRIC_ID

ADJUDICATION_SUFFIX = " · adjudication"
INBOX_FOLDER = "label_studio"


def project_title(agent_id: str, rubric_version: str, label_source: str = "annotation") -> str:
    """`<agent_id> · <rubric_id> <rubric_version>`; adjudication projects add ` · adjudication`."""
    title = f"{agent_id} · {RUBRIC_ID} {rubric_version}"
    return title + (ADJUDICATION_SUFFIX if label_source == "adjudication" else "")


def is_pipeline_project(title: str) -> bool:
    return f" · {RUBRIC_ID} " in title


def _key(data: dict) -> tuple[str, str]:
    return str(data.get("trace_id")), str(data.get("rubric_version"))


def push_tasks(client: LabelStudioClient, tasks: Sequence[dict], categories_by_version: dict,
               week: str | None = None) -> dict:
    """Push tasks (as `queue_to_label_studio_tasks` builds them) into their projects.

    Returns counts and, when `week` is given, the tasks of that week already in Label
    Studio whose trace is no longer in `tasks` (a re-drawn queue): reported, never deleted,
    since an annotator may have labeled them already.
    """
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for task in tasks:
        data = task["data"]
        groups.setdefault((data["agent_id"], data["rubric_version"], data.get("label_source", "annotation")),
                          []).append(task)
    stats = {"projects": 0, "projects_created": 0, "tasks_pushed": 0, "tasks_already_there": 0}
    stale: list[dict] = []
    for (agent, version, source), group in sorted(groups.items()):
        title = project_title(agent, version, source)
        project_id, created = client.ensure_project(title, label_config_xml(categories_by_version[version]))
        existing = {_key(t.get("data", {})): t for t in client.export(project_id, all_tasks=True)}
        wanted = {_key(t["data"]) for t in group}
        new = [{"data": t["data"], "meta": {"stratum": t["data"].get("stratum"),
                                             "queue_position": t["data"].get("queue_position")}}
               for t in group if _key(t["data"]) not in existing]
        stats["tasks_pushed"] += client.import_tasks(project_id, new)
        stats["tasks_already_there"] += len(group) - len(new)
        stats["projects"] += 1
        stats["projects_created"] += int(created)
        if week is not None:
            stale += [{"project": title, "task_id": t.get("id"), "trace_id": k[0]}
                      for k, t in existing.items() if t.get("data", {}).get("week") == week and k not in wanted]
    return {**stats, "stale_tasks": stale}


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def new_annotations(export: list[dict], cursor: dict | None) -> tuple[list[dict], dict | None]:
    """(the export's tasks cut to annotations created or updated after `cursor`, the next cursor).

    The cursor is the latest `updated_at` seen and the ids of the annotations at exactly
    that instant, so an annotation saved in the same microsecond as the cursor is not lost
    and one already taken is not taken twice.
    """
    since = _parse(cursor["updated_at"]) if cursor else None
    at_since = set(cursor["ids"]) if cursor else set()
    tasks, latest, latest_ids = [], since, set(at_since)
    for task in sorted(export, key=lambda t: t.get("id", 0)):
        fresh = []
        for ann in sorted(task.get("annotations") or [], key=lambda a: a.get("id", 0)):
            stamp = _parse(ann.get("updated_at") or ann["created_at"])
            if since is not None and (stamp < since or (stamp == since and ann.get("id") in at_since)):
                continue
            fresh.append(ann)
            if latest is None or stamp > latest:
                latest, latest_ids = stamp, {ann.get("id")}
            elif stamp == latest:
                latest_ids.add(ann.get("id"))
        if fresh:
            tasks.append({"id": task.get("id"), "data": task.get("data"), "annotations": fresh})
    if not tasks:
        return [], cursor
    return tasks, {"updated_at": latest.isoformat(), "ids": sorted(latest_ids)}


def with_annotator_emails(tasks: list[dict], emails: dict[int, str]) -> list[dict]:
    """`completed_by` as {id, email} where the user's email is known (the label's annotator)."""
    out = []
    for task in tasks:
        anns = []
        for ann in task["annotations"]:
            who = ann.get("completed_by")
            if isinstance(who, int) and who in emails:
                ann = {**ann, "completed_by": {"id": who, "email": emails[who]}}
            anns.append(ann)
        out.append({**task, "annotations": anns})
    return out


def write_inbox_export(inbox: Path, project_id: int, tasks: list[dict]) -> tuple[Path, str]:
    """Write the annotations as a Label Studio export file into the inbox, named by project
    and content (the same annotations give the same file): (path, sha256)."""
    body = json.dumps(tasks, ensure_ascii=False, sort_keys=True, indent=1).encode()
    sha = hashlib.sha256(body).hexdigest()
    path = inbox / INBOX_FOLDER / f"project-{project_id}-{sha[:16]}.json"
    atomic_write(path, body)
    return path, sha
