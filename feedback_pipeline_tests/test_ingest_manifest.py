"""The landing manifest: a week reads only the files it needs, with the same result as
reading every file — cross-week trace_id conflicts included."""

import os

import dagster as dg
import pytest

from feedback_pipeline.ingest.assets import ingest
from feedback_pipeline_tests.conftest import WEEK, good_record, write_jsonl

PREVIOUS = "2026-11-09"


def _run(home, week):
    context = dg.build_asset_context(partition_key=week, resources={"home": home})
    return {r.asset_key.to_user_string(): r.metadata for r in ingest(context)}["raw_traces"]


def _rows(home, sql):
    with home.warehouse() as con:
        return con.execute(sql).fetchall()


def _two_weeks(home):
    write_jsonl(home.landing / "w1.jsonl", [good_record(f"a{i}", timestamp="2026-11-10T10:00:00Z") for i in range(3)])
    write_jsonl(home.landing / "w2.jsonl.gz", [good_record(f"b{i}") for i in range(4)], gz=True)


def test_a_week_reads_only_its_files_once_indexed(home):
    _two_weeks(home)
    first = _run(home, WEEK)  # nothing indexed yet: both files are read
    assert first["files_scanned"] == 2 and first["loaded"] == 4
    again = _run(home, WEEK)
    assert again["files_scanned"] == 1 and again["loaded"] == 4
    assert again["files_skipped_unchanged (indexed, nothing this week)"] == 1
    previous = _run(home, PREVIOUS)
    assert previous["files_scanned"] == 1 and previous["loaded"] == 3
    manifest = dict(_rows(home, "SELECT source_file, weeks::VARCHAR[] FROM landing_manifest"))
    assert manifest == {"w1.jsonl": ["2026-11-09"], "w2.jsonl.gz": [WEEK]}


def test_changed_and_removed_files_are_re_read_and_forgotten(home):
    _two_weeks(home)
    _run(home, WEEK)
    path = home.landing / "w1.jsonl"
    write_jsonl(path, [good_record("moved")])  # now holds a record of WEEK
    os.utime(path, ns=(1, 1))  # a different mtime even within the clock's resolution
    meta = _run(home, WEEK)
    assert meta["files_scanned"] == 2 and meta["loaded"] == 5
    (home.landing / "w2.jsonl.gz").unlink()
    assert _run(home, WEEK)["loaded"] == 1
    assert _rows(home, "SELECT source_file FROM landing_manifest") == [("w1.jsonl",)]
    assert _rows(home, "SELECT DISTINCT source_file FROM landing_trace_index") == [("w1.jsonl",)]


def test_trace_id_resent_in_another_week_is_a_conflict_in_both_weeks(home):
    write_jsonl(home.landing / "early.jsonl", [good_record("x", timestamp="2026-11-10T10:00:00Z"),
                                               good_record("keep1", timestamp="2026-11-10T11:00:00Z")])
    _run(home, PREVIOUS)  # indexes early.jsonl under PREVIOUS only
    write_jsonl(home.landing / "late.jsonl", [good_record("x"), good_record("keep2")])
    meta = _run(home, WEEK)  # must also read early.jsonl to see the other copy of "x"
    assert meta["files_read_for_shared_trace_ids"] == 1
    assert meta["loaded"] == 1 and meta["quarantined"] == 1
    assert _run(home, PREVIOUS)["quarantined"] == 1  # and symmetric on re-run
    assert _rows(home, "SELECT trace_id FROM raw_traces ORDER BY 1") == [("keep1",), ("keep2",)]
    reasons = _rows(home, "SELECT week::VARCHAR, reason FROM ingest_quarantine ORDER BY 1")
    assert [w for w, _ in reasons] == [PREVIOUS, WEEK]
    assert all("appears 2 times with different content" in r for _, r in reasons)


def test_raw_traces_text_columns_use_the_chosen_compression(home):
    # Enough rows for DuckDB to write real column segments at checkpoint.
    write_jsonl(home.landing / "many.jsonl", [good_record(f"t{i}", user_message=f"message number {i} " * 5)
                                              for i in range(5000)])
    _run(home, WEEK)
    with home.warehouse() as con:
        con.execute("CHECKPOINT")
        used = dict(con.execute("""
            SELECT column_name, any_value(compression) FROM pragma_storage_info('raw_traces')
            WHERE segment_type = 'VARCHAR' GROUP BY 1""").fetchall())
    assert used["user_message"] == "FSST" and used["trace_id"] == "FSST"
    assert used["agent_id"] == "Dictionary"


def test_week_is_the_utc_monday_whatever_the_session_zone():
    import duckdb

    from feedback_pipeline.weeks import week_sql as week_of

    with duckdb.connect() as con:
        con.execute("SET TimeZone='America/New_York'")  # 2026-11-22 21:30 there: still Sunday
        monday = week_of("'2026-11-23T02:30:00Z'::TIMESTAMPTZ")
        sunday = week_of("'2026-11-23T00:30:00+01:00'::TIMESTAMPTZ")
        got = con.execute(f"SELECT {monday}::VARCHAR, {sunday}::VARCHAR").fetchone()
    assert got == ("2026-11-23", "2026-11-16")


TIMESTAMPS = [
    "2026-11-17T09:30:00Z", "2026-11-17T09:30:00+02:00", "2026-11-17 09:30:00", "2026-11-17",
    "2026-11-17T09:30:00.123456Z", "2026-11-17T09:30:00.123456789Z", "2026-11-17T09:30Z",
    "2026-11-17T09Z", "2026-11-17T09", "2026-11-17T09:30:00-0530", "2026-11-17T24:00:00Z",
    "2026-02-30T09:30:00Z", "20261117T093000Z", "2026-11-17T09:30:00 UTC", "yesterday", "",
]


def _line_path_only(monkeypatch):
    """Turn off the file-level pyarrow path: every line is typed by DuckDB, checked by rules.py."""
    from feedback_pipeline.ingest import arrow_fast

    monkeypatch.setattr(arrow_fast, "read_clean_jsonl", lambda data: None)


@pytest.mark.parametrize("timestamp", TIMESTAMPS)
def test_a_timestamp_gets_the_same_verdict_on_either_path(tmp_path, monkeypatch, timestamp):
    from feedback_pipeline.ingest.parse import parse_landing_frames

    write_jsonl(tmp_path / "clean.jsonl", [good_record("t", timestamp=timestamp)])
    fast, fast_q, *_ = parse_landing_frames(tmp_path)
    _line_path_only(monkeypatch)
    slow, slow_q, *_ = parse_landing_frames(tmp_path)
    assert fast.select("week", "timestamp").rows() == slow.select("week", "timestamp").rows()
    assert fast_q["field"].to_list() == slow_q["field"].to_list()


def test_landing_scan_is_checked_against_its_pandera_model(home):
    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
    from feedback_pipeline_tests.conftest import run_resources

    write_jsonl(home.landing / "a.jsonl", [good_record("t1"), good_record("t2")])
    result = dg.materialize(ASSETS + ASSET_CHECKS, selection=dg.AssetSelection.assets("landing_scan"),
                            resources=run_resources(home), raise_on_error=False)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_key == dg.AssetKey("landing_scan") and evaluation.passed
    with home.warehouse(read_only=True) as con:
        assert con.execute("SELECT source_file, weeks::VARCHAR[] FROM landing_scan").fetchall() == [
            ("a.jsonl", [WEEK])]
