"""Ingest: the contract rules, the quarantine, de-duplication and the weekly asset."""

import json

import dagster as dg
import polars as pl
import pytest

from feedback_pipeline.checks import validate_frame
from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, build_defs
from feedback_pipeline.ingest.assets import ingest
from feedback_pipeline.ingest.parse import parse_landing_frames
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.scoring.judge import JudgeResource
from feedback_pipeline_tests.conftest import DROP, WEEK, good_record, run_resources, write_jsonl

# Every bad class the contract names, with the field the quarantine must blame.
BAD_RECORDS = {
    "missing_trace_id": ({k: v for k, v in good_record("x").items() if k != "trace_id"}, "trace_id"),
    "mistyped_turn_index": (good_record("b1", turn_index="three"), "turn_index"),
    "bad_timestamp": (good_record("b2", timestamp="yesterday at noon"), "timestamp"),
    "negative_latency": (good_record("b3", latency_ms=-5), "latency_ms"),
    "thumbs_sideways": (good_record("b4", **{"feedback.thumbs": "sideways"}), "feedback.thumbs"),
    "reason_outside_taxonomy": (
        good_record("b5", **{"feedback.escalated": True, "feedback.escalation_reason": "bored"}),
        "feedback.escalation_reason",
    ),
    "reason_without_escalation": (
        good_record("b6", **{"feedback.escalation_reason": "tone_wrong"}), "feedback.escalation_reason",
    ),
    "tool_status": (good_record("b7", tool_calls=[{"name": "x", "status": "meh", "latency_ms": 1}]), "tool_calls"),
    "missing_response": (good_record("b8", agent_response=DROP), "agent_response"),
    "escalated_not_bool": (good_record("b9", **{"feedback.escalated": "yes"}), "feedback.escalated"),
}


@pytest.fixture
def landing(home):
    bad_lines = [rec for rec, _ in BAD_RECORDS.values()]
    write_jsonl(home.landing / "a" / "mixed.jsonl", [
        good_record("g1", locale="en-GB", **{"feedback.mood": "meh"}),
        "",  # blank lines are not records
        *bad_lines,
        "{\"trace_id\": \"cut",  # truncated JSON
        "[1, 2, 3]",  # not an object
        b"\xff\xfe junk \x00",  # binary junk
        good_record("dup"),
        good_record("conflict"),
    ])
    write_jsonl(home.landing / "b" / "resend.jsonl.gz", [
        good_record("dup"),  # identical re-send: dropped and counted
        good_record("conflict", agent_response="a different answer"),  # conflict: both quarantined
        good_record("g2", timestamp="2026-11-18T10:00:00+02:00"),
    ], gz=True)
    pl.DataFrame([good_record("g3")]).write_parquet(home.landing / "c.parquet")
    (home.landing / "notes.txt").write_text("not a landing file")
    (home.landing / "broken.parquet").write_bytes(b"PAR1 but not really")
    return home.landing


def test_every_bad_class_is_quarantined_with_its_field(landing):
    traces, quarantine, duplicates, parsed = parse_landing_frames(landing)
    assert sorted(traces["trace_id"]) == ["dup", "g1", "g2", "g3"]
    by_trace = {r["trace_id"]: r for r in quarantine.iter_rows(named=True) if r["trace_id"]}
    for name, (record, field) in BAD_RECORDS.items():
        if name == "missing_trace_id":
            continue
        row = by_trace[record["trace_id"]]
        assert row["field"] == field, (name, row["reason"])
        assert row["reason"].startswith("line "), row["reason"]
        assert row["raw_text"] and record["trace_id"] in row["raw_text"]
    reasons = quarantine["reason"].to_list()
    assert any("thumbs is \"sideways\", expected up/down/null" in r for r in reasons)
    assert any("not valid JSON" in r for r in reasons)
    assert any("is a JSON array" in r for r in reasons)
    assert any("not valid UTF-8" in r for r in reasons)
    assert any("trace_id is missing" in r for r in reasons)
    assert any(r.startswith("line 3:") for r in reasons), "blank line 2 must still count as a line"
    conflict_rows = quarantine.filter(pl.col("trace_id") == "conflict")
    assert conflict_rows.height == 2 and "different content" in conflict_rows["reason"][0]
    file_rows = quarantine.filter(pl.col("field") == "file")
    assert file_rows["source_file"].to_list() == ["broken.parquet"]
    assert duplicates["trace_id"].to_list() == ["dup"]
    assert parsed.skipped_files == ["notes.txt"]
    # Nothing lost: every non-blank record is loaded, a duplicate, or quarantined.
    assert parsed.records_read == traces.height + duplicates.height + quarantine["source_line"].is_not_null().sum()


def test_typed_values_and_unknown_fields_kept(landing):
    traces, *_ = parse_landing_frames(landing)
    g1 = traces.filter(pl.col("trace_id") == "g1").row(0, named=True)
    assert json.loads(g1["extra"]) == {"locale": "en-GB", "feedback.mood": "meh"}
    assert g1["tool_calls"] == [{"name": "lookup_order", "status": "ok", "latency_ms": 40}]
    g2 = traces.filter(pl.col("trace_id") == "g2").row(0, named=True)
    assert g2["timestamp"].isoformat() == "2026-11-18T08:00:00+00:00"  # offset honoured
    assert traces.filter(pl.col("trace_id") == "g3")["source_line"].to_list() == [1]
    assert set(traces["week"].cast(pl.String)) == {WEEK}


def test_asset_invoked_directly_reports_accounting(landing, home):
    context = dg.build_asset_context(partition_key=WEEK, resources={"home": home})
    results = {r.asset_key.to_user_string(): r for r in ingest(context)}
    meta = results["raw_traces"].metadata
    assert meta["loaded"] == 4
    assert meta["read"] == meta["loaded"] + meta["duplicates_dropped"] + meta["quarantined"]
    assert meta["duplicates_dropped"] == 1


def _materialize(home, week=WEEK):
    resources = run_resources(home)  # no judge: only ingest is under test
    result = dg.materialize(ASSETS + ASSET_CHECKS, partition_key=week, resources=resources)
    assert result.success
    return result


def _week_counts(home):
    with home.warehouse() as con:
        return con.sql(
            "SELECT week::VARCHAR, count(*), count(DISTINCT trace_id) FROM raw_traces GROUP BY 1 ORDER BY 1"
        ).fetchall(), con.sql("SELECT count(*) FROM ingest_quarantine").fetchone()[0]


def test_materialize_twice_never_duplicates_and_checks_pass(landing, home):
    first = _materialize(home)
    schema_checks = [e for e in first.get_asset_check_evaluations() if e.check_name == "schema_matches"]
    assert len(schema_checks) >= 3 and all(e.passed for e in schema_checks)
    counts = _week_counts(home)
    _materialize(home)
    assert _week_counts(home) == counts
    assert counts[0] == [(WEEK, 4, 4)]


def test_other_weeks_untouched_and_empty_week_is_fine(landing, home):
    write_jsonl(home.landing / "older.jsonl", [good_record("old", timestamp="2026-11-10T10:00:00Z")])
    _materialize(home, "2026-11-09")
    _materialize(home, WEEK)
    _materialize(home, "2026-11-02")  # no records: 0 rows, not an error
    rows, _ = _week_counts(home)
    assert rows == [("2026-11-09", 1, 1), (WEEK, 4, 4)]


def test_schema_check_fails_on_bad_rows(home):
    write_jsonl(home.landing / "x.jsonl", [good_record("ok1")])
    _materialize(home)
    with home.warehouse() as con:  # tamper: a value the contract forbids
        con.execute("UPDATE raw_traces SET thumbs = 'sideways'")
        frame = con.sql("SELECT * FROM raw_traces").pl()
    evaluation = validate_frame(RawTraces, frame)
    assert not evaluation.passed
    assert evaluation.metadata["failures"].value >= 1
    assert "sideways" in evaluation.metadata["examples"].value


def test_definitions_load():
    defs = build_defs()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw_traces", "ingest_quarantine"} <= keys
    defs.resolve_implicit_global_asset_job_def()


def test_fast_path_line_numbers_are_exact_across_blocks(home):
    # ~20 MB of clean JSONL: pyarrow parses it in several blocks; every row must keep
    # its own line number.
    filler = "x" * 600
    records = [good_record(f"t{i:05d}", user_message=filler) for i in range(30_000)]
    write_jsonl(home.landing / "big.jsonl", records)
    traces, quarantine, _, parsed = parse_landing_frames(home.landing)
    assert quarantine.is_empty() and traces.height == 30_000
    numbers = traces.select(pl.col("trace_id").str.slice(1).cast(pl.Int64) + 1 == pl.col("source_line"))
    assert numbers.to_series().all()
    assert parsed.records_read == 30_000
