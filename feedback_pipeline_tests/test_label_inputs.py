"""Issue #19, the label side: every kind of bad label input, and what the import does with it.

One table: a file's content → how many rows are accepted, counted as duplicates and
quarantined, and the reason(s) a person reads. Run through `import_labels`, the pure
function the `human_labels` asset calls; the last tests go through Dagster (an older
warehouse's column names, the clock-skew setting).
"""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.labels.importing import import_labels
from feedback_pipeline.labels.validation import DEFAULT_CLOCK_SKEW
from feedback_pipeline.rubrics import failure_categories

RUBRICS = {"v1": failure_categories("v1"), "v2": (*failure_categories("v1"), "too_verbose")}
NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)  # the import time
TRACES = pl.DataFrame({
    "trace_id": ["tr_001", "tr_002", "tr_003"],
    "timestamp": [datetime(2026, 11, 12, 10, tzinfo=timezone.utc), datetime(2026, 11, 12, 11, tzinfo=timezone.utc),
                  datetime(2026, 11, 13, 9, 30, 15, 250000, tzinfo=timezone.utc)],
    "escalated": [False, False, False],
    "escalation_reason": [None, None, None],
}, schema_overrides={"escalation_reason": pl.String})

HEADER = "trace_id,annotator_id,verdict,failure_category,rubric_version,labeled_at,notes"
GOOD = "tr_001,alice,fail,tool_failed,v1,2026-11-20T09:00:00Z,"  # accepted in every case below


def _csv(*rows: str) -> str:
    return "\n".join([HEADER, GOOD, *rows]) + "\n"


def _jsonl(*rows: dict) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def _label_studio(*annotations: dict, trace_id: str = "tr_002") -> str:
    return json.dumps([{"id": 7, "data": {"trace_id": trace_id, "rubric_version": "v1"},
                        "annotations": list(annotations)}])


def _annotation(choices: list[str], category: list[str] | None = None, **extra) -> dict:
    result = [{"from_name": "verdict", "to_name": "agent_response", "type": "choices",
               "value": {"choices": choices}}]
    if category:
        result.append({"from_name": "failure_category", "to_name": "agent_response", "type": "choices",
                       "value": {"choices": category}})
    return {"id": 1, "completed_by": {"id": 3, "email": "carol@example.com"}, "result": result,
            "was_cancelled": False, "updated_at": "2026-11-20T10:00:00Z", **extra}


JSON_GOOD = {"trace_id": "tr_002", "annotator_id": "bob", "verdict": "pass", "rubric_version": "v1",
             "labeled_at": "2026-11-20T09:00:00Z"}

# (case, file name, content, accepted, duplicates, quarantined, reasons expected in the quarantine)
CASES = [
    ("unknown trace", "f.csv", _csv("tr_404,alice,pass,,v1,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: trace_id 'tr_404' is not a known trace (not in raw_traces: check for a typo"]),
    ("unknown rubric version", "f.csv", _csv("tr_002,alice,pass,,v9,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: rubric_version 'v9' does not exist (known: v1, v2)"]),
    ("bad verdict", "f.csv", _csv("tr_002,alice,maybe,,v1,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: verdict 'maybe' is not pass or fail"]),
    ("fail without a category", "f.csv", _csv("tr_002,alice,fail,,v1,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: verdict fail needs a failure_category (one of: could_not_answer"]),
    ("pass with a category", "f.csv", _csv("tr_002,alice,pass,tone_wrong,v1,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: verdict pass must not carry a failure_category (got 'tone_wrong'): clear it or change "
      "the verdict to fail"]),
    ("empty annotator", "f.csv", _csv("tr_002, ,pass,,v1,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: annotator_id is empty: say who labeled the row"]),
    ("latin-1 file", "latin1.csv", (HEADER + "\ntr_001,andré,pass,,v1,2026-11-20T09:00:00Z,\n").encode("latin-1"),
     0, 0, 1, ["latin1.csv: the file is not UTF-8 text"]),
    ("semicolon-delimited file", "semi.csv", HEADER.replace(",", ";") + "\n" + GOOD.replace(",", ";") + "\n",
     0, 0, 1, ["semi.csv: the header lacks column(s) trace_id, annotator_id, verdict, failure_category, "
               "rubric_version, labeled_at; expected trace_id",
               "(the file seems to use ';' as its delimiter: save it comma-separated)"]),
    ("truncated JSONL", "t.jsonl", _jsonl(JSON_GOOD) + json.dumps({**JSON_GOOD, "trace_id": "tr_003"})[:40] + "\n",
     1, 0, 1, ["t.jsonl line 2: not valid JSON; each line must be one JSON object"]),
    ("empty file", "empty.csv", "", 0, 0, 1, ["empty.csv: the file is empty"]),
    ("header-only file", "header.csv", HEADER + "\n", 0, 0, 1,
     ["header.csv: the file holds no label rows (a header only"]),
    ("Label Studio cancelled annotation", "ls.json",
     _label_studio(_annotation(["pass"]), {**_annotation([]), "id": 2, "was_cancelled": True}), 1, 0, 1,
     ["ls.json row 2 (task 7): the annotation was skipped (was_cancelled) in Label Studio, so it holds no label"]),
    ("Label Studio out-of-rubric choice", "ls.json", _label_studio(_annotation(["fail"], ["made_up"])), 0, 0, 1,
     ["ls.json row 1: failure_category 'made_up' is not in rubric v1 (allowed: could_not_answer"]),
    ("labeled before the trace", "f.csv", _csv("tr_002,alice,pass,,v1,2020-01-01T00:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: labeled_at 2020-01-01T00:00:00Z is before the trace's timestamp 2026-11-12T11:00:00Z: "
      "fix the date or the trace_id"]),
    ("labeled before the trace, to the fraction", "f.csv", _csv("tr_003,alice,pass,,v1,2026-11-13T09:30:15Z,"),
     1, 0, 1, ["labeled_at 2026-11-13T09:30:15Z is before the trace's timestamp 2026-11-13T09:30:15.250Z"]),
    ("labeled in the future", "f.csv", _csv("tr_002,alice,pass,,v1,2099-01-01T00:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: labeled_at 2099-01-01T00:00:00Z is in the future (the import ran at 2026-11-26T00:00:00Z, "
      "allowing 5 minutes of clock skew): fix the date or the labeling tool's clock"]),
    ("within the clock-skew allowance", "f.csv", _csv("tr_002,alice,pass,,v1,2026-11-26T00:04:59Z,"), 2, 0, 0, []),
    ("labeled at the trace's own time", "f.csv", _csv("tr_002,alice,pass,,v1,2026-11-12T11:00:00Z,"), 2, 0, 0, []),
    ("same-file conflict", "f.csv", _csv("tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,",
                                         "tr_002,alice,fail,tone_wrong,v1,2026-11-20T09:00:00Z,"), 1, 0, 2,
     ["f.csv row 2: 2 different labels for the same trace_id, annotator_id, rubric_version and labeled_at "
      "2026-11-20T09:00:00Z in this import (f.csv row 2: pass; f.csv row 3: fail:tone_wrong): none is accepted",
      "f.csv row 3: 2 different labels"]),
    ("conflict with an identical copy", "f.csv", _csv("tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,",
                                                      "tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,",
                                                      "tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,typo?"), 1, 0, 3,
     ["f.csv row 2: 2 different labels", "f.csv row 3: 2 different labels", "f.csv row 4: 2 different labels"]),
    ("exact duplicate rows", "f.csv", _csv("tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,",
                                           "tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,"), 2, 1, 0, []),
    ("a broken copy is no conflict", "f.csv", _csv("tr_001,alice,maybe,,v1,2026-11-20T09:00:00Z,"), 1, 0, 1,
     ["f.csv row 2: verdict 'maybe' is not pass or fail"]),
    ("the same time by another annotator", "f.csv", _csv("tr_001,bob,pass,,v1,2026-11-20T09:00:00Z,"), 2, 0, 0, []),
]


def _import(tmp_path, files: dict[str, str | bytes], **kwargs):
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths.append((name, path))
    return import_labels(paths, None, None, TRACES, RUBRICS, "v1", imported_at=NOW, **kwargs)


@pytest.mark.parametrize(("case", "name", "content", "accepted", "duplicates", "quarantined", "reasons"),
                         CASES, ids=[c[0] for c in CASES])
def test_bad_label_input(tmp_path, case, name, content, accepted, duplicates, quarantined, reasons):
    result = _import(tmp_path, {name: content})
    assert (result.stats["accepted"], result.stats["duplicates"], result.stats["quarantined"]) == (
        accepted, duplicates, quarantined)
    assert result.stats["read"] == accepted + duplicates + quarantined
    found = result.new_quarantine["reason"].to_list()
    assert len(found) == quarantined
    for expected in reasons:
        assert any(expected in reason for reason in found), (expected, found)
    assert result.new_quarantine["source_file"].to_list() == [name] * quarantined
    assert result.history.filter("is_current").height == accepted  # nothing refused slips in
    assert result.quarantine.equals(result.new_quarantine)  # a first import: nothing earlier


def test_conflict_fields_and_raw_text(tmp_path):
    result = _import(tmp_path, {"f.csv": _csv("tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,",
                                              "tr_002,alice,fail,tone_wrong,v1,2026-11-20T09:00:00Z,")})
    rows = result.new_quarantine.sort("source_line").to_dicts()
    assert [r["source_line"] for r in rows] == [2, 3]
    assert {r["field"] for r in rows} == {"verdict,failure_category"}
    assert json.loads(rows[1]["raw_text"])["verdict"] == "fail"


def test_conflict_across_files_of_one_import(tmp_path):
    """Two files imported together disagree: both rows out (which wins would depend on file order)."""
    result = _import(tmp_path, {
        "a.csv": _csv("tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,"),
        "b.jsonl": _jsonl({**JSON_GOOD, "annotator_id": "alice", "verdict": "fail", "failure_category": "tone_wrong"}),
    })
    assert (result.stats["accepted"], result.stats["quarantined"]) == (1, 2)
    assert sorted(result.new_quarantine["source_file"]) == ["a.csv", "b.jsonl"]
    assert "(a.csv row 2: pass; b.jsonl row 1: fail:tone_wrong)" in result.new_quarantine["reason"][0]


def test_a_later_import_still_corrects_an_earlier_one(tmp_path):
    """Conflicts are within one import: a re-label in a later import supersedes, as before."""
    first = _import(tmp_path, {"a.csv": _csv("tr_002,alice,pass,,v1,2026-11-20T09:00:00Z,")})
    (tmp_path / "b.csv").write_text(HEADER + "\ntr_002,alice,fail,tone_wrong,v1,2026-11-20T09:00:00Z,\n")
    second = import_labels([("b.csv", tmp_path / "b.csv")], first.history, first.quarantine, TRACES, RUBRICS,
                           "v1", imported_at=NOW + timedelta(days=1))
    assert second.stats == {"read": 1, "accepted": 1, "duplicates": 0, "quarantined": 0, "superseded": 1}
    current = second.history.filter("is_current", pl.col("trace_id") == "tr_002")
    assert current["verdict"].to_list() == ["fail"]


def test_clock_skew_is_a_setting(tmp_path):
    content = _csv("tr_002,alice,pass,,v1,2026-11-26T06:00:00Z,")
    assert _import(tmp_path, {"f.csv": content}).stats["quarantined"] == 1
    wide = _import(tmp_path, {"f.csv": content}, clock_skew=timedelta(hours=7))
    assert (wide.stats["accepted"], wide.stats["quarantined"]) == (2, 0)
    assert DEFAULT_CLOCK_SKEW == timedelta(minutes=5)


def test_ids_only_skip_the_trace_time_rule(tmp_path):
    """validate_labels still takes bare trace ids (no timestamps known: only the future rule applies)."""
    from feedback_pipeline.labels.reading import read_label_file
    from feedback_pipeline.labels.validation import validate_labels

    path = tmp_path / "f.csv"
    path.write_text(_csv("tr_002,alice,pass,,v1,2020-01-01T00:00:00Z,", "tr_003,alice,pass,,v1,2099-01-01T00:00:00Z,"))
    accepted, quarantined = validate_labels(read_label_file(path)[0], {"tr_001", "tr_002", "tr_003"}, RUBRICS, now=NOW)
    assert accepted["trace_id"].to_list() == ["tr_001", "tr_002"]
    assert "in the future" in quarantined["reason"][0]


# ------------------------------------------------------------------ through Dagster

def _materialize(home, run_config=None) -> dg.ExecuteInProcessResult:
    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
    from feedback_pipeline_tests.conftest import run_resources

    result = dg.materialize(ASSETS + ASSET_CHECKS, selection=dg.AssetSelection.assets("human_labels"),
                            resources=run_resources(home), raise_on_error=False, run_config=run_config)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    return result


def _seed_traces(home) -> None:
    with duckdb.connect(str(home.warehouse_path)) as con:
        con.register("t", TRACES.with_columns(pl.col("timestamp").dt.truncate("1w").dt.date().alias("week")))
        con.execute("CREATE TABLE raw_traces AS SELECT * FROM t")


def test_an_older_warehouse_keeps_working(home):
    """human_labels / label_quarantine written with source_row and raw_record: renamed in place."""
    home.labels_inbox.mkdir(parents=True, exist_ok=True)
    _seed_traces(home)
    with duckdb.connect(str(home.warehouse_path)) as con:
        con.execute("""CREATE TABLE human_labels AS SELECT
            'old1' AS label_id, 'tr_003' AS trace_id, 'zoe' AS annotator_id, 'pass' AS verdict,
            NULL::VARCHAR AS failure_category, 'v1' AS rubric_version,
            TIMESTAMPTZ '2026-11-20 08:00:00+00' AS labeled_at, NULL::VARCHAR AS notes, 'annotation' AS source,
            'old.csv' AS source_file, 4::BIGINT AS source_row, 'sha-old' AS file_sha256,
            TIMESTAMPTZ '2026-11-21 00:00:00+00' AS imported_at, true AS is_current, NULL::VARCHAR AS superseded_by""")
        con.execute("""CREATE TABLE label_quarantine AS SELECT
            'old.csv' AS source_file, 5::BIGINT AS source_row, 'sha-old' AS file_sha256, 'tr_404' AS trace_id,
            'zoe' AS annotator_id, 'trace_id' AS field, 'old.csv row 5: unknown' AS reason,
            '{"trace_id": "tr_404"}' AS raw_record, TIMESTAMPTZ '2026-11-21 00:00:00+00' AS quarantined_at""")
    (home.labels_inbox / "f.csv").write_text(_csv("tr_002,alice,pass,,v1,2020-01-01T00:00:00Z,"))
    _materialize(home)
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        labels = con.execute("SELECT trace_id, source_line FROM human_labels ORDER BY trace_id").fetchall()
        quarantine = con.execute("SELECT source_file, source_line, raw_text FROM label_quarantine "
                                 "ORDER BY source_file").fetchall()
    assert labels == [("tr_001", 1), ("tr_003", 4)]
    assert [q[:2] for q in quarantine] == [("f.csv", 2), ("old.csv", 5)]
    assert json.loads(quarantine[0][2])["labeled_at"] == "2020-01-01T00:00:00Z"
    assert quarantine[1][2] == '{"trace_id": "tr_404"}'


def test_clock_skew_through_run_config(home):
    home.labels_inbox.mkdir(parents=True, exist_ok=True)
    _seed_traces(home)
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    (home.labels_inbox / "f.csv").write_text(_csv(f"tr_002,alice,pass,,v1,{tomorrow},"))
    result = _materialize(home, {"ops": {"human_labels": {"config": {"clock_skew_minutes": 2 * 24 * 60}}}})
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "human_labels"]
    meta = event.materialization.metadata
    assert (meta["accepted"].value, meta["quarantined"].value) == (2, 0)


def test_the_demo_annotators_labels_pass_the_new_rules(tmp_path):
    """The demo labels a week's queue from the Monday after it (+ up to 3 days, corrections a
    day later): after that window, only the three deliberately malformed rows are refused."""
    from datetime import date

    from feedback_pipeline.demo.annotators import write_demo_labels

    week, n = date(2026, 11, 16), 300
    ids = [f"tr_{i:03d}" for i in range(n)]
    queue = pl.DataFrame({
        "week": [week] * n, "agent_id": ["billing"] * n, "trace_id": ids, "stratum": ["unrated"] * n,
        "inclusion_prob": [0.1] * n, "queue_position": list(range(n)), "user_message": ["q"] * n,
        "agent_response": ["a"] * n, "context": [""] * n,
    })
    categories = failure_categories("v1")
    truth = pl.DataFrame({"trace_id": ids, "true_verdict": ["fail" if i % 3 == 0 else "pass" for i in range(n)],
                          "true_failure_category": [categories[i % 6] if i % 3 == 0 else None for i in range(n)]})
    paths = write_demo_labels(queue, truth, tmp_path / "inbox", week, seed=7)
    sunday_night = datetime(2026, 11, 22, 23, 59, 59, 999999, tzinfo=timezone.utc)  # the week's last instant
    traces = pl.DataFrame({"trace_id": ids, "timestamp": [sunday_night] * n, "escalated": [False] * n,
                           "escalation_reason": [None] * n}, schema_overrides={"escalation_reason": pl.String})
    after_the_window = datetime(2026, 11, 27, 9, 5, tzinfo=timezone.utc)
    result = import_labels([(p.name, p) for p in paths], None, None, traces, RUBRICS, "v1",
                           imported_at=after_the_window)
    reasons = result.new_quarantine["reason"].to_list()
    assert len(reasons) == 3, reasons
    assert ["is not a known trace" in reasons[0], "'maybe' is not pass or fail" in reasons[1],
            "needs a failure_category" in reasons[2]] == [True] * 3
    assert result.stats["accepted"] > n
