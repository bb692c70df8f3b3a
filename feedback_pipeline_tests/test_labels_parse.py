"""Label files → human_labels: each format, quarantine reasons, idempotent import, supersede."""

import hashlib
import json
import xml.etree.ElementTree as ET
from datetime import date, datetime, timezone

import polars as pl
import pytest

from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.label_studio import (
    label_config_xml, queue_to_label_studio_tasks,
)
from feedback_pipeline.rubrics import failure_categories
from feedback_pipeline.labels.parse import (
    CANDIDATE_COLUMNS, HUMAN_LABEL_COLUMNS, LABEL_COLUMNS, QUARANTINE_COLUMNS,
    escalation_labels, merge_labels, read_label_file, validate_labels,
)

V1_FAILURE_CATEGORIES = failure_categories("v1")
LABEL_CONFIG_XML = label_config_xml(V1_FAILURE_CATEGORIES)
RUBRICS = {"v1": V1_FAILURE_CATEGORIES, "v2": (*V1_FAILURE_CATEGORIES, "too_verbose")}
TRACES = {"tr_001", "tr_002", "tr_003"}
T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)

# The three minimal examples (the README shows these).
MINIMAL_CSV = """\
trace_id,annotator_id,verdict,failure_category,rubric_version,labeled_at,notes
tr_001,alice@example.com,pass,,v1,2024-05-13T09:15:00Z,
tr_002,alice@example.com,fail,tool_failed,v1,2024-05-13T09:17:30Z,"search tool timed out, answer made up"
"""
MINIMAL_JSONL = """\
{"trace_id": "tr_001", "annotator_id": "bob@example.com", "verdict": "fail", "failure_category": "wrong_information", "rubric_version": "v1", "labeled_at": "2024-05-13T10:02:00+02:00"}
{"trace_id": "tr_002", "annotator_id": "bob@example.com", "verdict": "fail", "failure_category": "tool_failed", "rubric_version": "v1", "labeled_at": "2024-05-13T10:05:00Z", "notes": "same as alice"}
"""
MINIMAL_LABEL_STUDIO = """\
[
  {
    "id": 17,
    "data": {"trace_id": "tr_001", "rubric_version": "v1", "user_message": "Where is my order?",
             "context": "", "agent_response": "Could you give me your order number?"},
    "annotations": [
      {
        "id": 41,
        "completed_by": {"id": 3, "email": "carol@example.com"},
        "result": [
          {"from_name": "verdict", "to_name": "agent_response", "type": "choices",
           "value": {"choices": ["fail"]}},
          {"from_name": "failure_category", "to_name": "agent_response", "type": "choices",
           "value": {"choices": ["could_not_answer"]}},
          {"from_name": "notes", "to_name": "agent_response", "type": "textarea",
           "value": {"text": ["asked for an order number it already had"]}}
        ],
        "was_cancelled": false,
        "created_at": "2024-05-13T11:00:00.000000Z",
        "updated_at": "2024-05-13T11:04:12.512000Z"
      },
      {
        "id": 42,
        "completed_by": 5,
        "result": [{"from_name": "verdict", "to_name": "agent_response", "type": "choices",
                    "value": {"choices": ["pass"]}}],
        "was_cancelled": false,
        "created_at": "2024-05-13T11:30:00Z",
        "updated_at": "2024-05-13T11:30:00Z"
      }
    ]
  }
]
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _import(path, history=None, imported_at=T0):
    candidates, file_problems = read_label_file(path)
    accepted, quarantined = validate_labels(candidates, TRACES, RUBRICS)
    quarantine = pl.concat([file_problems, quarantined])
    history, stats = merge_labels(history, accepted, quarantined=quarantine, imported_at=imported_at)
    return history, stats, quarantine


def _label_studio_with(tmp_path, annotations, data=None, name="ls.json"):
    task = {"id": 1, "data": data or {"trace_id": "tr_001", "rubric_version": "v1"},
            "annotations": annotations}
    return _write(tmp_path, name, json.dumps([task]))


# ------------------------------------------------------------------ each format

def test_minimal_csv(tmp_path):
    candidates, problems = read_label_file(_write(tmp_path, "alice.csv", MINIMAL_CSV))
    assert problems.is_empty() and candidates.schema == pl.Schema(CANDIDATE_COLUMNS)
    accepted, quarantined = validate_labels(candidates, TRACES, RUBRICS)
    assert quarantined.is_empty()
    assert accepted.schema == pl.Schema(LABEL_COLUMNS)
    rows = accepted.sort("trace_id").to_dicts()
    assert [(r["trace_id"], r["verdict"], r["failure_category"]) for r in rows] == [
        ("tr_001", "pass", None), ("tr_002", "fail", "tool_failed")]
    assert rows[1]["notes"] == "search tool timed out, answer made up"
    assert rows[1]["labeled_at"] == datetime(2024, 5, 13, 9, 17, 30, tzinfo=timezone.utc)
    assert {r["source"] for r in rows} == {"annotation"}
    assert [r["source_line"] for r in rows] == [1, 2]  # data rows, header not counted
    assert rows[0]["file_sha256"] == hashlib.sha256(MINIMAL_CSV.encode()).hexdigest()


def test_minimal_jsonl(tmp_path):
    candidates, problems = read_label_file(_write(tmp_path, "bob.jsonl", MINIMAL_JSONL))
    accepted, quarantined = validate_labels(candidates, TRACES, RUBRICS)
    assert problems.is_empty() and quarantined.is_empty() and accepted.height == 2
    first = accepted.filter(pl.col("trace_id") == "tr_001").row(0, named=True)
    # +02:00 offset → stored in UTC
    assert first["labeled_at"] == datetime(2024, 5, 13, 8, 2, tzinfo=timezone.utc)
    assert first["notes"] is None


def test_minimal_label_studio_export(tmp_path):
    candidates, problems = read_label_file(_write(tmp_path, "export.json", MINIMAL_LABEL_STUDIO))
    accepted, quarantined = validate_labels(candidates, TRACES, RUBRICS)
    assert problems.is_empty() and quarantined.is_empty()
    rows = {r["annotator_id"]: r for r in accepted.to_dicts()}
    # completed_by as a user object → its email; as a bare id → a namespaced id
    assert set(rows) == {"carol@example.com", "label_studio_user:5"}
    carol = rows["carol@example.com"]
    assert (carol["trace_id"], carol["verdict"], carol["failure_category"], carol["rubric_version"]) == (
        "tr_001", "fail", "could_not_answer", "v1")
    assert carol["notes"] == "asked for an order number it already had"
    assert carol["labeled_at"] == datetime(2024, 5, 13, 11, 4, 12, 512000, tzinfo=timezone.utc)  # updated_at
    assert rows["label_studio_user:5"]["verdict"] == "pass"


def test_label_studio_cancelled_annotation_is_quarantined_not_dropped(tmp_path):
    path = _label_studio_with(tmp_path, [{"id": 1, "completed_by": 2, "result": [], "was_cancelled": True}])
    candidates, problems = read_label_file(path)
    assert candidates.is_empty() and problems.height == 1
    assert "skipped (was_cancelled)" in problems["reason"][0]


def test_label_studio_without_choices_or_created_at_only(tmp_path):
    path = _label_studio_with(tmp_path, [
        {"id": 1, "completed_by": {"id": 9}, "result": [], "created_at": "2024-05-13T12:00:00Z"}])
    accepted, quarantined = validate_labels(read_label_file(path)[0], TRACES, RUBRICS)
    assert accepted.is_empty()
    assert quarantined["annotator_id"][0] == "label_studio_user:9"  # object without email → id
    assert "verdict is empty" in quarantined["reason"][0]


# ---------------------------------------------------------- file-level problems

@pytest.mark.parametrize(("name", "content", "expected"), [
    ("labels.txt", "whatever", "unknown extension '.txt'"),
    ("empty.csv", "", "the file is empty"),
    ("latin1.csv", "trace_id\n\xe9".encode("latin-1"), "not UTF-8"),
    ("short.csv", "trace_id,verdict\ntr_001,pass\n", "lacks column(s) annotator_id, failure_category"),
    ("broken.json", "[{", "not valid JSON"),
    ("object.json", '{"tasks": []}', "expected; export the project as JSON"),
    ("not_a_task.json", '[{"data": "x"}]', "not a Label Studio task"),
])
def test_file_level_problems_are_quarantine_rows(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    candidates, problems = read_label_file(path)
    assert candidates.is_empty() and problems.height == 1
    assert problems.schema == pl.Schema(QUARANTINE_COLUMNS)
    assert expected in problems["reason"][0] and name in problems["reason"][0]


def test_unreadable_file(tmp_path):
    candidates, problems = read_label_file(tmp_path / "gone.csv")
    assert candidates.is_empty() and "could not read the file" in problems["reason"][0]


def test_bad_jsonl_lines_are_quarantined_and_good_lines_kept(tmp_path):
    good = MINIMAL_JSONL.splitlines()
    path = _write(tmp_path, "mixed.jsonl", "\n".join([good[0], "{not json", "", "[1, 2]", good[1]]) + "\n")
    candidates, problems = read_label_file(path)
    assert candidates["source_line"].to_list() == [1, 5]  # physical lines, blank line 3 skipped
    assert problems["source_line"].to_list() == [2, 4]
    assert "line 2: not valid JSON" in problems["reason"][0]
    assert "a JSON array where an object was expected" in problems["reason"][1]
    assert problems["raw_text"].to_list() == ["{not json", "[1, 2]"]


# ------------------------------------------------------------ quarantine reasons

GOOD = {"trace_id": "tr_001", "annotator_id": "alice", "verdict": "fail",
        "failure_category": "tool_failed", "rubric_version": "v1", "labeled_at": "2024-05-13T09:00:00Z"}


@pytest.mark.parametrize(("change", "field", "expected"), [
    ({"trace_id": "tr_404"}, "trace_id", "trace_id 'tr_404' is not a known trace"),
    ({"trace_id": ""}, "trace_id", "trace_id is empty"),
    ({"verdict": "maybe"}, "verdict", "verdict 'maybe' is not pass or fail"),
    ({"verdict": ""}, "verdict", "verdict is empty"),
    ({"failure_category": "too_verbose"}, "failure_category",
     "failure_category 'too_verbose' is not in rubric v1 (allowed: could_not_answer"),
    ({"annotator_id": "  "}, "annotator_id", "annotator_id is empty"),
    ({"labeled_at": "last tuesday"}, "labeled_at", "labeled_at 'last tuesday' is not an ISO-8601 time"),
    ({"labeled_at": ""}, "labeled_at", "labeled_at is empty"),
    ({"rubric_version": "v9"}, "rubric_version", "rubric_version 'v9' does not exist (known: v1, v2)"),
    ({"rubric_version": ""}, "rubric_version", "rubric_version is empty"),
    ({"failure_category": ""}, "failure_category", "verdict fail needs a failure_category"),
    ({"verdict": "pass"}, "failure_category", "verdict pass must not carry a failure_category (got 'tool_failed')"),
    ({"source": "escalation"}, "source", "source 'escalation' is not one of annotation, adjudication"),
])
def test_every_quarantine_reason(tmp_path, change, field, expected):
    rows = [GOOD, {**GOOD, "trace_id": "tr_002", **change}]
    header = list(GOOD) + ["source"]
    text = ",".join(header) + "\n" + "\n".join(",".join(r.get(c, "") for c in header) for r in rows)
    accepted, quarantined = validate_labels(read_label_file(_write(tmp_path, "f.csv", text))[0], TRACES, RUBRICS)
    assert accepted["trace_id"].to_list() == ["tr_001"]  # the good row still goes in
    assert quarantined.height == 1
    row = quarantined.row(0, named=True)
    assert row["field"] == field and row["source_line"] == 2
    assert row["reason"].startswith("f.csv row 2: ") and expected in row["reason"]
    assert (json.loads(row["raw_text"])["trace_id"] or "") == rows[1]["trace_id"]  # CSV "" reads as null


def test_category_valid_in_newer_rubric_version_is_accepted_there(tmp_path):
    row = {**GOOD, "failure_category": "too_verbose", "rubric_version": "v2"}
    text = ",".join(GOOD) + "\n" + ",".join(row.values())
    accepted, quarantined = validate_labels(read_label_file(_write(tmp_path, "v2.csv", text))[0], TRACES, RUBRICS)
    assert quarantined.is_empty() and accepted["rubric_version"].to_list() == ["v2"]


def test_several_problems_on_one_row_are_all_named(tmp_path):
    text = ",".join(GOOD) + "\ntr_404,,maybe,,v1,soon\n"
    accepted, quarantined = validate_labels(read_label_file(_write(tmp_path, "m.csv", text))[0], TRACES, RUBRICS)
    assert accepted.is_empty()
    assert quarantined["field"][0] == "trace_id,annotator_id,verdict,labeled_at"
    assert quarantined["reason"][0].count(";") == 3


def test_case_and_whitespace_are_normalised(tmp_path):
    text = ",".join(GOOD) + "\n tr_001 , alice ,FAIL, Tool_Failed ,v1, 2024-05-13 09:00:00 \n"
    accepted, quarantined = validate_labels(read_label_file(_write(tmp_path, "n.csv", text))[0], TRACES, RUBRICS)
    assert quarantined.is_empty()
    assert accepted.select("trace_id", "annotator_id", "verdict", "failure_category").row(0) == (
        "tr_001", "alice", "fail", "tool_failed")


def test_known_trace_ids_as_series(tmp_path):
    accepted, _ = validate_labels(read_label_file(_write(tmp_path, "a.csv", MINIMAL_CSV))[0],
                                  pl.Series(["tr_001"]), RUBRICS)
    assert accepted["trace_id"].to_list() == ["tr_001"]


# ------------------------------------------------------------- history semantics

def test_reimporting_the_same_file_changes_nothing(tmp_path):
    path = _write(tmp_path, "alice.csv", MINIMAL_CSV)
    history, first, _ = _import(path)
    again, second, _ = _import(path, history, imported_at=datetime(2024, 6, 2, tzinfo=timezone.utc))
    assert first == {"read": 2, "accepted": 2, "duplicates": 0, "quarantined": 0, "superseded": 0}
    assert second == {"read": 2, "accepted": 0, "duplicates": 2, "quarantined": 0, "superseded": 0}
    assert again.equals(history)
    assert history.schema == pl.Schema(HUMAN_LABEL_COLUMNS)


def test_identical_label_from_another_file_is_a_duplicate(tmp_path):
    history, _, _ = _import(_write(tmp_path, "alice.csv", MINIMAL_CSV))
    as_jsonl = ('{"trace_id": "tr_002", "annotator_id": "alice@example.com", "verdict": "fail", '
                '"failure_category": "tool_failed", "rubric_version": "v1", '
                '"labeled_at": "2024-05-13T11:17:30+02:00", "notes": "search tool timed out, answer made up"}\n'
                '{"trace_id": "tr_003", "annotator_id": "alice@example.com", "verdict": "pass", '
                '"rubric_version": "v1", "labeled_at": "2024-05-13T09:20:00Z"}\n')
    history, stats, _ = _import(_write(tmp_path, "alice_again.jsonl", as_jsonl), history)
    assert stats == {"read": 2, "accepted": 1, "duplicates": 1, "quarantined": 0, "superseded": 0}
    assert history.height == 3


def test_corrected_relabel_supersedes_and_stays_in_history(tmp_path):
    history, _, _ = _import(_write(tmp_path, "alice.csv", MINIMAL_CSV))
    old_id = history.filter(pl.col("trace_id") == "tr_002")["label_id"][0]
    fix = MINIMAL_CSV.splitlines()[0] + "\ntr_002,alice@example.com,fail,wrong_information,v1,2024-05-14T08:00:00Z,re-read it\n"
    history, stats, _ = _import(_write(tmp_path, "alice_fix.csv", fix), history,
                                imported_at=datetime(2024, 6, 2, tzinfo=timezone.utc))
    assert stats["superseded"] == 1 and stats["accepted"] == 1
    tr2 = history.filter(pl.col("trace_id") == "tr_002").sort("labeled_at")
    assert tr2["is_current"].to_list() == [False, True]
    assert tr2["superseded_by"].to_list() == [tr2["label_id"][1], None]
    assert tr2["label_id"][0] == old_id
    current = history.filter("is_current")
    assert current.height == 2 and current.filter(pl.col("trace_id") == "tr_002")["failure_category"][0] == "wrong_information"
    # Another annotator's label on the same trace is not a correction.
    other = MINIMAL_CSV.splitlines()[0] + "\ntr_002,bob,pass,,v1,2024-05-15T08:00:00Z,\n"
    history, stats, _ = _import(_write(tmp_path, "bob.csv", other), history)
    assert stats["superseded"] == 0 and history.filter("is_current").height == 3


def test_a_late_arriving_older_label_does_not_override_the_newer_one(tmp_path):
    newer = MINIMAL_CSV.splitlines()[0] + "\ntr_001,alice,fail,other,v1,2024-05-20T00:00:00Z,\n"
    older = MINIMAL_CSV.splitlines()[0] + "\ntr_001,alice,pass,,v1,2024-05-10T00:00:00Z,\n"
    history, _, _ = _import(_write(tmp_path, "newer.csv", newer))
    history, stats, _ = _import(_write(tmp_path, "older.csv", older), history)
    assert stats["superseded"] == 1
    assert history.filter("is_current")["verdict"].to_list() == ["fail"]


def test_accounting_read_equals_accepted_duplicates_quarantined(tmp_path):
    history, _, _ = _import(_write(tmp_path, "alice.csv", MINIMAL_CSV))
    mixed = MINIMAL_CSV + "tr_404,alice,pass,,v1,2024-05-13T09:00:00Z,\ntr_003,alice,pass,,v1,2024-05-13T09:00:00Z,\n"
    _, stats, quarantine = _import(_write(tmp_path, "mixed.csv", mixed), history)
    assert stats == {"read": 4, "accepted": 1, "duplicates": 2, "quarantined": 1, "superseded": 0}
    assert stats["read"] == stats["accepted"] + stats["duplicates"] + stats["quarantined"]
    assert quarantine["source_line"].to_list() == [3]


def test_label_id_is_a_stable_content_hash(tmp_path):
    accepted, _ = validate_labels(read_label_file(_write(tmp_path, "a.csv", MINIMAL_CSV))[0], TRACES, RUBRICS)
    key = "\x1f".join(["annotation", "tr_001", "alice@example.com", "v1", "pass", "\x00", "\x00",
                       "2024-05-13T09:15:00.000000Z"])
    assert accepted.filter(pl.col("trace_id") == "tr_001")["label_id"][0] == hashlib.sha256(key.encode()).hexdigest()[:32]


# ------------------------------------------------------------------ escalations

def test_escalation_reasons_become_fail_labels():
    reasons = ["agent_could_not_answer", "tone_wrong", "tool_failed", "wrong_information",
               "policy_violation", "other", "user_requested_human", None, "made_up_reason", "tool_failed"]
    traces = pl.DataFrame({
        "trace_id": [f"t{i}" for i in range(len(reasons))],
        "timestamp": [T0] * len(reasons),
        "escalated": [True] * 8 + [True, False],
        "escalation_reason": reasons,
    })
    labels = escalation_labels(traces, "v1")
    assert labels.schema == pl.Schema(LABEL_COLUMNS)
    assert dict(zip(labels["trace_id"], labels["failure_category"])) == {
        "t0": "could_not_answer", "t1": "tone_wrong", "t2": "tool_failed", "t3": "wrong_information",
        "t4": "policy_violation", "t5": "other", "t8": "other"}  # t6 signal only, t7 no reason, t9 not escalated
    assert set(labels["verdict"]) == {"fail"} and set(labels["source"]) == {"escalation"}
    assert set(labels["annotator_id"]) == {"escalation"} and set(labels["rubric_version"]) == {"v1"}
    assert labels.filter(pl.col("trace_id") == "t8")["notes"][0] == "escalation_reason=made_up_reason"
    history, first = merge_labels(None, labels, imported_at=T0)
    again, second = merge_labels(history, escalation_labels(traces, "v1"), imported_at=T0)
    assert first["accepted"] == 7 and second["duplicates"] == 7 and again.equals(history)


# --------------------------------------------------------------- Label Studio out

def _queue():
    return pl.DataFrame({
        "week": [date(2024, 5, 6)] * 2, "agent_id": ["billing"] * 2, "trace_id": ["tr_002", "tr_001"],
        "stratum": ["escalated:tool_failed", "unrated"], "inclusion_prob": [1.0, 0.05],
        "queue_position": [2, 1], "user_message": ["refund?", "hi"], "agent_response": ["no", None],
        "context": [[{"role": "user", "text": "earlier"}], None],
    })


def test_queue_to_label_studio_tasks():
    tasks = queue_to_label_studio_tasks(_queue(), "v1")
    json.dumps(tasks)  # importable as-is: plain JSON
    assert [t["data"]["trace_id"] for t in tasks] == ["tr_001", "tr_002"]  # queue order
    first, second = (t["data"] for t in tasks)
    assert set(tasks[0]) == {"data"}
    assert first["rubric_version"] == "v1" and first["week"] == "2024-05-06"
    assert first["agent_response"] == "" and first["context"] == ""
    assert json.loads(second["context"]) == [{"role": "user", "text": "earlier"}]
    assert first["label_source"] == "annotation"
    assert queue_to_label_studio_tasks(_queue(), "v1", label_source="adjudication")[0]["data"]["label_source"] == "adjudication"


def test_label_config_xml():
    root = ET.fromstring(LABEL_CONFIG_XML)
    choices = {c.get("name"): c for c in root.iter("Choices")}
    assert [c.get("value") for c in choices["verdict"]] == ["pass", "fail"]
    assert choices["verdict"].get("required") == "true"
    assert [c.get("value") for c in choices["failure_category"]] == list(V1_FAILURE_CATEGORIES)
    assert {t.get("value") for t in root.iter("Text")} == {"$user_message", "$context", "$agent_response"}
    assert [t.get("name") for t in root.iter("TextArea")] == ["notes"]
    odd = ET.fromstring(label_config_xml(["a&b", 'say "hi"']))
    assert [c.get("value") for c in odd.iter("Choice")][2:] == ["a&b", 'say "hi"']


# ------------------------------------------------------------------------- demo

def test_demo_annotators_write_three_formats_deterministically(tmp_path):
    n = 200
    ids = [f"tr_{i:03d}" for i in range(n)]
    queue = pl.DataFrame({
        "week": [date(2024, 5, 6)] * n, "agent_id": ["billing"] * n, "trace_id": ids,
        "stratum": ["unrated"] * n, "inclusion_prob": [0.1] * n, "queue_position": list(range(n)),
        "user_message": ["q"] * n, "agent_response": ["a"] * n, "context": [""] * n,
    })
    fails = {i for i in range(n) if i % 3 == 0}
    truth = pl.DataFrame({
        "trace_id": ids,
        "true_verdict": ["fail" if i in fails else "pass" for i in range(n)],
        "true_failure_category": [V1_FAILURE_CATEGORIES[i % 6] if i in fails else None for i in range(n)],
    })
    paths = write_demo_labels(queue, truth, tmp_path / "a", "2024-05-06", seed=7)
    again = write_demo_labels(queue, truth, tmp_path / "b", date(2024, 5, 6), seed=7)
    assert [p.suffix for p in paths] == [".csv", ".jsonl", ".json"]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    history, quarantined = None, []
    for path in paths:
        candidates, problems = read_label_file(path)
        accepted, bad = validate_labels(candidates, set(ids), RUBRICS)
        history, stats = merge_labels(history, accepted, quarantined=bad, imported_at=T0)
        quarantined.append(pl.concat([problems, bad]))
    reasons = " ".join(pl.concat(quarantined)["reason"])
    assert "is not a known trace" in reasons and "'maybe' is not pass or fail" in reasons
    assert "needs a failure_category" in reasons
    current = history.filter("is_current")
    assert current["trace_id"].n_unique() == n
    double = current.group_by("trace_id").len().filter(pl.col("len") > 1).height
    assert 0.08 * n < double < 0.25 * n
    assert history.filter(~pl.col("is_current")).height >= 1  # a corrected re-label
    lenient = current.filter(pl.col("annotator_id") == "lenient@demo.example").join(truth, on="trace_id")
    missed = lenient.filter(pl.col("true_verdict") == "fail")["verdict"].eq("pass").mean()
    assert 0.1 < missed < 0.55
