"""Tracing exports read as they are: OTLP/JSON (GenAI semconv, OpenInference), Langfuse,
LangSmith and Phoenix fixtures written from the specs -> turns, quarantine, accounting."""

import json
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from feedback_pipeline.ingest.assets import ingest
from feedback_pipeline.ingest.parse import parse_landing_frames
from feedback_pipeline_tests.conftest import WEEK, good_record, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
A, B, C, D = ("4bf92f3577b34da6a3ce929d0e0e4736", "5c0a3f4e6d7b8a9c0d1e2f3a4b5c6d7e",
              "6d1b4f5f7e8c9bad1e2f3a4b5c6d7e8f", "7e2c5a6a8f9dacbe2f3a4b5c6d7e8f90")
F, G = "ab5f8d9dbbc0dfe05c6d7e8f90a1b2c3", "bc6a9eaeccd1e0f16d7e8f90a1b2c3d4"


def _landing(tmp_path, *folders) -> Path:
    landing = tmp_path / "landing"
    for folder in folders:
        shutil.copytree(FIXTURES / folder, landing / folder)
    return landing


def _by_trace(traces: pl.DataFrame) -> dict:
    return {r["trace_id"]: r for r in traces.iter_rows(named=True)}


def _accounting_holds(traces, quarantine, duplicates, parsed):
    assert parsed.records_read == traces.height + duplicates.height + quarantine["source_line"].is_not_null().sum()
    spans = parsed.spans
    assert (spans["rows_read"] == spans["in_turns"] + spans["duplicates"] + spans["held"]
            + spans["quarantined"]).all()


def test_otlp_every_generation_and_quirk(tmp_path):
    traces, quarantine, duplicates, parsed = parse_landing_frames(_landing(tmp_path, "otel"))
    turns = _by_trace(traces)
    assert sorted(turns) == sorted([A, B, C, D, F, G])
    assert set(traces["source_format"]) == {"otlp"}
    a = turns[A]  # gen_ai.input/output.messages with parts; child chat + tool spans folded in
    assert (a["user_message"], a["agent_response"]) == ("Where is my refund for order 1234?", "It was issued yesterday.")
    assert a["model"] == "gpt-4o-2024-08-06" and a["agent_id"] == "refunds" and a["user_id"] == "u-1"
    assert a["tool_calls"] == [{"name": "lookup_order", "status": "ok", "latency_ms": 40},
                               {"name": "issue_refund", "status": "error", "latency_ms": 250}]
    assert a["latency_ms"] == 2300 and a["timestamp"].isoformat() == "2026-11-17T09:30:00+00:00"
    extra = json.loads(a["extra"])
    assert extra["evaluations"][0]["name"] == "relevance" and a["thumbs"] is None  # evaluator kept apart
    assert extra["source_spans"] == 5
    b = turns[B]  # deprecated events, base64 ids, integer times; second turn of conv-1
    assert b["user_message"] == "And when will it reach my card?" and b["agent_response"] == "Within 3-5 business days."
    assert (b["conversation_id"], b["turn_index"], a["turn_index"]) == ("conv-1", 1, 0)
    assert b["source_trace_id"] == "XAo/Tm17ipwNHi86S1xtfg==" and b["source_span_id"] == "ERERERERERE="
    c = turns[C]  # legacy gen_ai.prompt.N / completion.N, byte-array ids, {low, high} and [sec, nanos] times
    assert (c["user_message"], c["agent_response"]) == ("Is my flight on time?", "Yes, it departs at 10:40.")
    assert c["timestamp"].isoformat() == "2026-11-17T09:32:00+00:00" and c["latency_ms"] == 1000
    d = turns[D]  # OpenInference: input/output.value, session.id, metadata, tags, llm.model_name, TOOL span
    assert (d["conversation_id"], d["user_id"], d["intent"], d["channel"]) == ("sess-9", "patient-7", "reschedule", "sms")
    assert d["model"] == "gpt-4o-mini" and d["tool_calls"][0]["name"] == "book_slot"
    assert json.loads(d["extra"])["source_context"]["tags"] == ["vip", "sms"]
    f = turns[F]  # children in collector.jsonl, root in batch-2.jsonl.gz: one turn
    assert f["source_file"] == "otel/batch-2.jsonl.gz" and f["user_message"] == "Cancel my booking please"
    assert f["model"] == "claude-sonnet-4" and f["tool_calls"][0]["name"] == "cancel_booking"
    g = turns[G]  # a single pretty-printed request, protobuf snake_case names
    assert g["user_message"] == "Refund status?" and g["agent_id"] == "refunds" and g["source_file"] == "otel/request.json"
    assert duplicates["trace_id"].to_list() == [A]  # the Collector re-sent trace A
    reasons = dict(zip(quarantine["source_line"].to_list(), quarantine["reason"].to_list()))
    assert set(quarantine["source_file"]) == {"otel/collector.jsonl"}
    assert "has no user message" in reasons[5] and "record the user's message" in reasons[5]
    assert "root span never arrived (missing parent ffffffffffffffff)" in reasons[6]
    assert "not valid JSON" in reasons[7] and "without resourceSpans" in reasons[8]
    _accounting_holds(traces, quarantine, duplicates, parsed)
    spans = {r["source_file"]: r for r in parsed.spans.iter_rows(named=True)}
    assert spans["otel/collector.jsonl"] == {"source_file": "otel/collector.jsonl", "rows_read": 21, "in_turns": 13,
                                             "duplicates": 4, "held": 0, "quarantined": 4}


def test_langfuse_langsmith_phoenix(tmp_path):
    landing = _landing(tmp_path, "langfuse", "langfuse-export", "langsmith", "phoenix")
    traces, quarantine, duplicates, parsed = parse_landing_frames(landing)
    assert parsed.formats["langfuse-export/observations.csv"] == "langfuse_observations"
    assert parsed.formats["phoenix/spans.parquet"] == "phoenix"
    turns = _by_trace(traces)
    lf = turns["lf-trace-1"]  # UI download: trace + observations + scores
    assert (lf["user_message"], lf["agent_response"]) == ("My package never arrived", "I've opened a claim for you.")
    assert (lf["thumbs"], lf["escalated"], lf["escalation_reason"]) == ("down", True, "wrong_information")
    assert lf["tool_calls"] == [{"name": "open_claim", "status": "error", "latency_ms": 300}]
    assert (lf["conversation_id"], lf["user_id"], lf["intent"], lf["latency_ms"]) == ("lf-sess-1", "u-9", "missing_package", 2500)
    extra = json.loads(lf["extra"])
    assert extra["evaluations"] == [{"name": "hallucination", "value": 0.1}]  # EVAL score kept apart
    assert extra["scores"] == [{"name": "csat", "value": 4.0}]  # unmapped annotation kept
    t2, t3 = turns["lf-t2"], turns["lf-t3"]  # blob export: JSONL traces, CSV observations, Parquet scores
    assert (t2["user_message"], t2["agent_response"], t2["thumbs"]) == ("Track order 77", "Order 77 ships today.", "up")
    assert t2["model"] == "gemini-2.0-flash" and (t2["turn_index"], t3["turn_index"]) == (0, 1)
    assert t3["thumbs"] == "down" and t3["timestamp"].isoformat() == "2026-11-18T09:00:00+00:00"
    ls = turns["1b64098b-4ab7-43f6-afee-992304f198d8"]  # serialized LangChain messages, dotted_order trace id
    assert (ls["user_message"], ls["agent_response"]) == ("hi, I want a refund for order 9", "Refund issued for order 9.")
    assert (ls["conversation_id"], ls["model"], ls["thumbs"]) == ("th-1", "gpt-4o-mini", "up")
    assert ls["tool_calls"][0] == {"name": "issue_refund", "status": "error", "latency_ms": 400}
    assert json.loads(ls["extra"])["evaluations"][0]["name"] == "correctness"  # model feedback is an evaluator's
    ls2 = turns["2c75109c-5bc8-44a7-b0ff-aa3415a0a9e9"]
    assert (ls2["turn_index"], ls2["escalation_reason"], ls2["user_message"]) == (1, "tone_wrong", "When will the money arrive?")
    ph = turns["cd7baf0fdde2f102e8f90a1b2c3d4e5f"]
    assert (ph["agent_response"], ph["model"], ph["vertical"]) == ("Booked for 19:00.", "llama-3.1-70b", "hospitality")
    assert ph["tool_calls"][0]["status"] == "error"
    assert turns["de8cb01feef3f2130f90a1b2c3d4e5f6"]["user_message"] == "Is the kitchen open late?"
    assert len(turns) == 7 and duplicates.is_empty()
    by_file = {r["source_file"]: r for r in quarantine.iter_rows(named=True)}
    assert "root span never arrived" in by_file["langfuse-export/observations.csv"]["reason"]
    assert "is for trace lf-t9, which is in no landing file" in by_file["langfuse-export/scores.parquet"]["reason"]
    assert "has no user message" in by_file["langsmith/runs.jsonl"]["reason"]
    _accounting_holds(traces, quarantine, duplicates, parsed)


def _otlp_line(trace, span, parent, start_ns, name="chat", attrs=()):
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                               "scopeSpans": [{"spans": [{
                                   "traceId": trace, "spanId": span, "parentSpanId": parent, "name": name,
                                   "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + 10**9),
                                   "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs]}]}]}]}


def test_a_trace_without_its_root_is_held_until_its_week_closes(tmp_path, monkeypatch):
    from datetime import date, datetime, timezone

    import feedback_pipeline.ingest.sources as sources

    landing = tmp_path / "landing"
    start = int(datetime(2026, 11, 17, 9, tzinfo=timezone.utc).timestamp() * 1e9)
    trace = "0123456789abcdef0123456789abcdef"
    write_jsonl(landing / "otel" / "a.jsonl", [_otlp_line(trace, "1111111111111111", "2222222222222222", start)])
    monkeypatch.setattr(sources, "current_week", lambda: date(2026, 11, 16))  # the week is still open
    traces, quarantine, _, parsed = parse_landing_frames(landing)
    assert traces.is_empty() and quarantine.is_empty()
    assert parsed.spans.row(0, named=True)["held"] == 1 and parsed.records_read == 0
    write_jsonl(landing / "otel" / "b.jsonl", [_otlp_line(trace, "2222222222222222", "", start - 10**6, "agent", [
        ("gen_ai.agent.name", "refunds"), ("input.value", "hello?"), ("output.value", "hi!")])])
    traces, quarantine, _, parsed = parse_landing_frames(landing)  # the root arrived: one turn
    assert traces["user_message"].to_list() == ["hello?"] and quarantine.is_empty()
    (landing / "otel" / "b.jsonl").unlink()
    monkeypatch.setattr(sources, "current_week", lambda: date(2026, 11, 23))  # the week has closed
    traces, quarantine, _, parsed = parse_landing_frames(landing)
    assert traces.is_empty() and quarantine["field"].to_list() == ["trace"]
    assert "root span never arrived (missing parent 2222222222222222)" in quarantine["reason"][0]


def test_sources_yaml_pins_format_agent_and_feedback_names(tmp_path):
    landing = _landing(tmp_path, "langsmith")
    (landing / "sources.yaml").write_text(
        "default:\n  feedback:\n    thumbs: [correctness]\n"
        "folders:\n  langsmith:\n    format: langsmith\n    agent_id: billing\n")
    traces, *_ , parsed = parse_landing_frames(landing)
    assert set(traces["agent_id"]) == {"billing"}
    root = _by_trace(traces)["1b64098b-4ab7-43f6-afee-992304f198d8"]
    assert root["thumbs"] is None  # user_feedback is no longer mapped; correctness is an evaluator's, never thumbs
    assert json.loads(root["extra"])["scores"][0]["name"] == "user_feedback"
    assert "sources.yaml" not in parsed.skipped_files and "sources.yaml" not in parsed.formats


def test_contract_and_exports_side_by_side_in_the_asset_and_a_rerun_changes_nothing(tmp_path, home):
    for folder in ("otel", "langfuse"):
        shutil.copytree(FIXTURES / folder, home.landing / folder)
    write_jsonl(home.landing / "contract.jsonl", [good_record("c1")])
    context = dg.build_asset_context(partition_key=WEEK, resources={"home": home})
    meta = {r.asset_key.to_user_string(): r.metadata for r in ingest(context)}["raw_traces"]
    assert meta["loaded"] == 8 and meta["duplicates_dropped"] == 1 and meta["quarantined"] == 4
    assert meta["read"] == meta["loaded"] + meta["duplicates_dropped"] + meta["quarantined"]
    assert meta["formats"].data["otel/collector.jsonl"] == "otlp"
    assert "| otel/collector.jsonl | 21 | 13 | 4 | 0 | 4 |" in \
        meta["source_rows (rows_read = in_turns + duplicates + held + quarantined)"].value
    assert meta["source_rows_held (root not arrived, week open)"] == 0
    with home.warehouse() as con:
        first = con.execute("SELECT source_format, count(*) FROM raw_traces GROUP BY 1 ORDER BY 1").fetchall()
    assert first == [("contract", 1), ("langfuse", 1), ("otlp", 6)]
    context = dg.build_asset_context(partition_key=WEEK, resources={"home": home})
    list(ingest(context))
    with home.warehouse() as con:
        assert con.execute("SELECT source_format, count(*) FROM raw_traces GROUP BY 1 ORDER BY 1").fetchall() == first
        assert con.execute("SELECT count(*) FROM ingest_quarantine").fetchone()[0] == 4


def test_an_old_warehouse_gets_the_new_columns(home):
    write_jsonl(home.landing / "x.jsonl", [good_record("old1")])
    with home.warehouse() as con:  # raw_traces as written before source_* existed
        con.execute("CREATE TABLE raw_traces AS SELECT DATE '2026-11-09' AS week, 'old0' AS trace_id")
    context = dg.build_asset_context(partition_key=WEEK, resources={"home": home})
    list(ingest(context))
    with home.warehouse() as con:
        rows = con.execute("SELECT trace_id, source_format FROM raw_traces ORDER BY trace_id").fetchall()
    assert rows == [("old0", "contract"), ("old1", "contract")]


def test_a_root_arriving_in_a_later_file_is_assembled_with_its_indexed_children(home):
    shutil.copytree(FIXTURES / "otel", home.landing / "otel")
    batch2 = home.landing / "otel" / "batch-2.jsonl.gz"
    batch2.rename(home.landing / "later.bin")
    context = dg.build_asset_context(partition_key=WEEK, resources={"home": home})
    first = {r.asset_key.to_user_string(): r.metadata for r in ingest(context)}["raw_traces"]
    assert first["loaded"] == 5  # trace F's root has not arrived; the week has closed: an orphan
    (home.landing / "otel" / "late").mkdir()
    (home.landing / "later.bin").rename(home.landing / "otel" / "late" / "batch-2.jsonl.gz")
    context = dg.build_asset_context(partition_key=WEEK, resources={"home": home})
    again = {r.asset_key.to_user_string(): r.metadata for r in ingest(context)}["raw_traces"]
    assert again["loaded"] == 6 and again["files_read_for_shared_trace_ids"] + again["files_scanned"] >= 2
    with home.warehouse() as con:
        tools = con.execute(f"SELECT tool_calls FROM raw_traces WHERE trace_id = '{F}'").fetchone()[0]
        assert tools[0]["name"] == "cancel_booking"
        assert con.execute(f"SELECT count(*) FROM ingest_quarantine WHERE trace_id = '{F}'").fetchone()[0] == 0


def test_a_converted_turn_breaking_a_contract_rule_is_quarantined_with_its_text(tmp_path):
    start = 1794907800 * 10**9  # 2026-11-17T09:30:00Z
    root = _otlp_line("feedfacefeedfacefeedfacefeedface", "1111111111111111", "", start, "agent",
                      [("gen_ai.agent.name", "refunds"), ("input.value", "hi"), ("output.value", "hello")])
    tool = _otlp_line("feedfacefeedfacefeedfacefeedface", "2222222222222222", "1111111111111111", start + 10**6,
                      "tool", [("gen_ai.operation.name", "execute_tool")])
    del tool["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]  # a tool call with no name at all
    write_jsonl(tmp_path / "landing" / "otel.jsonl", [root, tool])
    traces, quarantine, duplicates, parsed = parse_landing_frames(tmp_path / "landing")
    assert traces.is_empty()
    row = quarantine.row(0, named=True)
    assert (row["source_line"], row["field"]) == (1, "tool_calls")
    assert row["reason"].startswith("line 1: tool_calls is ") and '"user_message":"hi"' in row["raw_text"]
    _accounting_holds(traces, quarantine, duplicates, parsed)


def test_the_arrow_fast_path_and_the_json_path_give_the_same_turn(tmp_path):
    lines = (FIXTURES / "otel" / "collector.jsonl").read_text().splitlines()
    write_jsonl(tmp_path / "fast" / "d.jsonl", [lines[3]])  # a clean Collector file: typed by pyarrow
    write_jsonl(tmp_path / "slow" / "d.jsonl", [lines[3], "{}"])  # one bad line: the JSON path
    from feedback_pipeline.ingest.sources.otlp_arrow import read_otlp_arrow

    assert read_otlp_arrow(tmp_path / "fast" / "d.jsonl") is not None
    assert read_otlp_arrow(tmp_path / "slow" / "d.jsonl") is None
    fast, *_ = parse_landing_frames(tmp_path / "fast")
    slow, *_ = parse_landing_frames(tmp_path / "slow")
    assert fast.drop("source_file").rows() == slow.drop("source_file").rows()
    assert json.loads(fast["extra"][0])["source_context"]["tags"] == ["vip", "sms"]


def test_a_json_or_csv_file_of_no_known_shape_is_quarantined_whole(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "notes.csv").write_text("a,b\n1,2\n")
    (landing / "config.json").write_text('{"theme": "dark"}')
    traces, quarantine, _, parsed = parse_landing_frames(landing)
    assert traces.is_empty() and sorted(quarantine["source_file"]) == ["config.json", "notes.csv"]
    assert set(quarantine["field"]) == {"file"} and all("no known record shape" in r for r in quarantine["reason"])
    assert parsed.formats["notes.csv"] == "unknown"


@pytest.mark.parametrize("clean", [True, False], ids=["arrow_path", "json_path"])
def test_a_repeated_attribute_key_keeps_its_first_value(tmp_path, clean):
    start = 1794907800 * 10**9
    line = _otlp_line("abcdefabcdefabcdefabcdefabcdef12", "1111111111111111", "", start, "agent",
                      [("input.value", "first question"), ("input.value", "second"), ("output.value", "ok"),
                       ("gen_ai.agent.name", "refunds")])
    write_jsonl(tmp_path / "landing" / "o.jsonl", [line] if clean else [line, "{}"])
    traces, *_ = parse_landing_frames(tmp_path / "landing")
    assert traces["user_message"].to_list() == ["first question"]
