"""The quirks one by one, on the pure pieces: id and time macros, message flattening, feedback mapping, detection."""

import duckdb
import pytest

from feedback_pipeline.ingest.sources.config import DEFAULT_FEEDBACK
from feedback_pipeline.ingest.sources.detect import classify
from feedback_pipeline.ingest.sources.feedback import map_feedback
from feedback_pipeline.ingest.sources.macros import install_macros
from feedback_pipeline.ingest.sources.messages import final_text, user_message


@pytest.fixture(scope="module")
def con():
    with duckdb.connect() as con:
        con.execute("SET TimeZone='UTC'")
        install_macros(con)
        yield con


@pytest.mark.parametrize("written, expected", [
    ('"4BF92F3577B34DA6A3CE929D0E0E4736"', "4bf92f3577b34da6a3ce929d0e0e4736"),  # hex (OTLP/JSON)
    ('"S/kvNXezTaajzpKdDg5HNg=="', "4bf92f3577b34da6a3ce929d0e0e4736"),  # base64 (protobuf JSON mapping)
    ('[0, 240, 103, 170, 11, 169, 2, 183]', "00f067aa0ba902b7"),  # byte array
    ('"APBnqgupArc="', "00f067aa0ba902b7"),
    ('""', None), ('"0000000000000000"', None), ('"AAAAAAAAAAA="', None), ("null", None),  # no parent
    ('"1b64098b-4ab7-43f6-afee-992304f198d8"', "1b64098b-4ab7-43f6-afee-992304f198d8"),  # UUIDs as written
])
def test_ids(con, written, expected):
    assert con.execute(f"SELECT src_id('{written}'::JSON)").fetchone()[0] == expected


NS = 1794907800123456789  # 2026-11-17T09:30:00.123456789Z


@pytest.mark.parametrize("written", [
    f'"{NS}"', f"{NS}",  # int64 as a string (OTLP/JSON) and as a number
    '{"low": %d, "high": %d}' % ((NS & 0xFFFFFFFF) - (1 << 32 if NS & 0x80000000 else 0), NS >> 32),
    f"[{NS // 10**9}, {NS % 10**9}]",  # HrTime [sec, nanos]
])
def test_exact_nanosecond_times(con, written):
    assert con.execute(f"SELECT src_ns('{written}'::JSON)").fetchone()[0] == NS


@pytest.mark.parametrize("written", [
    '"2026-11-17T09:30:00.123456Z"', '"2026-11-17 09:30:00.123456"', '"2026-11-17T11:30:00.123456+02:00"',
    '"2026-11-17T09:30:00.123456"', "1794907800.123456", "1794907800123456", '"1794907800123456"',
])
def test_times_to_the_microsecond(con, written):
    assert con.execute(f"SELECT src_ns('{written}'::JSON) // 1000").fetchone()[0] == NS // 1000


def test_attribute_values_unwrapped(con):
    attrs = ('[{"key": "s", "value": {"stringValue": "x"}}, {"key": "i", "value": {"intValue": "42"}},'
             ' {"key": "d", "value": {"doubleValue": 0.5}}, {"key": "b", "value": {"boolValue": true}},'
             ' {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "t"}]}}},'
             ' {"key": "k", "value": {"kvlistValue": {"values": [{"key": "z", "value": {"intValue": 1}}]}}},'
             ' {"key": "raw", "value": "plain"}]')
    got = con.execute(f"SELECT src_attrs(from_json('{attrs}', '[{{\"key\": \"VARCHAR\", \"value\": \"JSON\"}}]'))"
                      ).fetchone()[0]
    assert got == {"s": "x", "i": "42", "d": "0.5", "b": "true", "a": '["t"]', "k": '{"z":1}', "raw": "plain"}


@pytest.mark.parametrize("value, expected", [
    ("plain question", "plain question"),
    ('[{"role": "user", "content": "json-encoded string"}]', "json-encoded string"),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "openai"}], "openai"),
    ([{"role": "user", "parts": [{"type": "text", "content": "otel parts"}]}], "otel parts"),
    ([{"role": "user", "content": [{"type": "text", "text": "anthropic"}, {"type": "image"}]}], "anthropic"),
    ({"messages": [{"type": "human", "content": "langchain"}]}, "langchain"),
    ({"contents": [{"role": "user", "parts": [{"text": "gemini"}]}]}, "gemini"),
    ({"messages": [[{"lc": 1, "id": ["x", "HumanMessage"], "kwargs": {"content": "serialized"}}]]}, "serialized"),
    ({"question": "a dict input"}, "a dict input"),
])
def test_user_message_shapes(value, expected):
    assert user_message({"value": value}) == expected


def test_indexed_and_event_messages():
    indexed = {"llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "s",
               "llm.input_messages.1.message.role": "user",
               "llm.input_messages.1.message.contents.0.message_content.text": "multi-part",
               "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "legacy"}
    assert user_message({"indexed": indexed}) == "multi-part"
    assert user_message({"indexed": {k: v for k, v in indexed.items() if k.startswith("gen_ai")}}) == "legacy"
    events = [{"name": "gen_ai.user.message", "attrs": {"content": "first"}},
              {"name": "gen_ai.assistant.message", "attrs": {"content": "a"}},
              {"name": "gen_ai.user.message", "attrs": {"gen_ai.event.content": '{"content": "second"}'}},
              {"name": "gen_ai.choice", "attrs": {"message": '{"role": "assistant", "content": "answer"}'}}]
    assert user_message({"events": events}) == "second" and final_text({"events": events}) == "answer"
    assert final_text({"value": {"generations": [[{"text": "gen"}]]}}) == "gen"
    assert final_text({"value": '{"output": "wrapped"}'}) == "wrapped"
    assert user_message({"value": None}) is None and final_text({}) is None


def test_feedback_mapping_keeps_what_it_does_not_map():
    scores = [{"name": "user-feedback", "value": True, "origin": "feedback"},
              {"name": "escalation", "value": "Agent could not answer", "origin": "feedback"},
              {"name": "escalation", "value": "manager please", "origin": "feedback"},
              {"name": "helpfulness", "value": 0.2, "origin": "evaluator"},
              {"name": "thumbs", "value": "sideways", "origin": "feedback"},
              {"name": "rewrite", "value": "yes", "origin": "feedback"}]
    feedback, extra = map_feedback(scores, DEFAULT_FEEDBACK)
    assert feedback == {"thumbs": "up", "escalated": True, "escalation_reason": "other", "user_rewrote": True}
    assert extra["escalation_label"] == "manager please"
    assert extra["evaluations"] == [{"name": "helpfulness", "value": 0.2}]
    assert extra["scores"] == [{"name": "thumbs", "value": "sideways"}]  # unreadable thumbs kept, not guessed


@pytest.mark.parametrize("keys, kind", [
    ({"resourceSpans"}, "otlp"), ({"resource_spans"}, "otlp"),
    ({"id", "timestamp", "observations", "scores"}, "langfuse_api"),
    ({"id", "timestamp", "name", "session_id", "user_id", "project_id"}, "langfuse_traces"),
    ({"id", "trace_id", "type", "parent_observation_id", "start_time"}, "langfuse_observations"),
    ({"id", "trace_id", "name", "value", "data_type", "source"}, "langfuse_scores"),
    ({"id", "run_type", "inputs", "outputs", "trace_id"}, "langsmith_runs"),
    ({"id", "run_id", "key", "score"}, "langsmith_feedback"),
    ({"name", "span_kind", "context.trace_id", "context.span_id", "attributes"}, "phoenix"),
    ({"trace_id", "conversation_id", "user_message", "agent_response", "timestamp"}, "contract"),
])
def test_detection_by_content(keys, kind):
    assert classify(keys) == kind
