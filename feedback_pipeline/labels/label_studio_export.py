"""Reading a Label Studio JSON export (a list of tasks, each with its annotations) as label rows.

One row per annotation, numbered in file order; a skipped (cancelled) annotation or a
task that is not a task becomes a problem row. The project's labeling config and the
tasks sent to Label Studio are `feedback_pipeline.label_studio`'s; CSV and JSONL are
`text_files.py`'s.
"""

import json

import polars as pl

from feedback_pipeline.label_studio import CATEGORY_CONTROL, NOTES_CONTROL, VERDICT_CONTROL
from feedback_pipeline.labels.shapes import candidates, file_problem, problem_row, problems


def read_label_studio_export(text: str, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one candidate row per completed annotation, problem rows) of an export's text."""
    # A Label Studio export is one JSON list whose annotations hold heterogeneous
    # shapes (completed_by is an int or a user object; result values vary by control
    # type), which no single Arrow schema fits: flattening it in Python is the clear way.
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        return candidates([]), file_problem(name, None, f"not valid JSON: {exc}")
    if not isinstance(tasks, list):
        return candidates([]), file_problem(name, None, (
            f"a JSON {type(tasks).__name__} where a Label Studio export (a JSON list "
            "of tasks) was expected; export the project as JSON"))
    rows, bad, ordinal = [], [], 0
    for t_index, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        annotations = task.get("annotations", []) if isinstance(task, dict) else None
        if not isinstance(data, dict) or not isinstance(annotations, list):
            ordinal += 1
            bad.append(problem_row(name, ordinal, None, None, (
                f"{name} task #{t_index}: not a Label Studio task (needs a 'data' object "
                "and an 'annotations' list)"), json.dumps(task)[:2000]))
            continue
        for ann in annotations:
            ordinal += 1
            raw = json.dumps({"task_id": task.get("id"), "data_trace_id": data.get("trace_id"),
                              "annotation": ann})
            if not isinstance(ann, dict):
                bad.append(problem_row(name, ordinal, _text(data.get("trace_id")), None,
                                       f"{name} row {ordinal}: annotation is not a JSON object", raw))
                continue
            annotator = _annotator(ann.get("completed_by"))
            if ann.get("was_cancelled"):
                bad.append(problem_row(name, ordinal, _text(data.get("trace_id")), annotator, (
                    f"{name} row {ordinal} (task {task.get('id')}): the annotation was skipped "
                    "(was_cancelled) in Label Studio, so it holds no label"), raw))
                continue
            result = ann.get("result") or []
            rows.append({
                "source_line": ordinal,
                "trace_id": _text(data.get("trace_id")),
                "annotator_id": annotator,
                "verdict": _control_text(result, VERDICT_CONTROL, "choices", ","),
                "failure_category": _control_text(result, CATEGORY_CONTROL, "choices", ","),
                "rubric_version": _text(data.get("rubric_version")),
                "labeled_at": _text(ann.get("updated_at") or ann.get("created_at")),
                "notes": _control_text(result, NOTES_CONTROL, "text", "\n"),
                "source": _text(data.get("label_source")),
                "raw_text": raw,
            })
    return candidates(rows), problems(bad)


def _annotator(completed_by: object) -> str | None:
    """Label Studio's `completed_by`: an int user id, or a user object (email preferred)."""
    if isinstance(completed_by, dict):
        if completed_by.get("email"):
            return str(completed_by["email"])
        completed_by = completed_by.get("id")
    if completed_by is None or completed_by == "":
        return None
    return f"label_studio_user:{completed_by}"


def _control_text(result: list, control: str, key: str, sep: str) -> str | None:
    values = [str(v) for r in result if isinstance(r, dict) and r.get("from_name") == control
              for v in (r.get("value") or {}).get(key) or []]
    return sep.join(values) if values else None


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)
