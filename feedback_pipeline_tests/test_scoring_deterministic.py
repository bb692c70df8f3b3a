"""Deterministic scorers: refusals, disclaimers, tool errors, latency buckets, shape."""

import polars as pl
import pytest

from feedback_pipeline.ingest.contract import TOOL_CALL_DTYPE
from feedback_pipeline.scoring.deterministic import deterministic_scores, with_conversation_context


def _score(responses, latencies=None, tools=None):
    n = len(responses)
    frame = pl.DataFrame(
        {
            "agent_response": responses,
            "latency_ms": latencies or [100] * n,
            "tool_calls": tools or [None] * n,
        },
        schema_overrides={"tool_calls": TOOL_CALL_DTYPE, "latency_ms": pl.Int64},
    )
    return frame.select(deterministic_scores())


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I am unable to process refunds for this order.",
    "I cannot assist with booking flights outside the EU.",
    "I'm not allowed to share other customers' details.",
])
def test_refusals_detected(text):
    assert _score([text])["is_refusal"].to_list() == [True]


@pytest.mark.parametrize("text", [
    "Your refund of 20 EUR was issued today.",
    "I can help with that: your appointment is at 3pm.",
    "Sorry for the wait! Your flight is confirmed.",
])
def test_helpful_answers_are_not_refusals(text):
    scored = _score([text])
    assert scored["is_refusal"].to_list() == [False]
    assert scored["deterministic_low_score"].to_list() == [False]


def test_disclaimers_and_hedges():
    scored = _score([
        "Please note that fares may change.",
        "I'm not a medical professional, but rinse with salt water.",
        "This is not legal advice.",
        "Your booking is confirmed.",
    ])
    assert scored["has_disclaimer"].to_list() == [True, True, True, False]


def test_shape_tools_latency_and_low_score():
    scored = _score(
        ["", "two words", "ok"],
        latencies=[999, 3000, 12000],
        tools=[None, [{"name": "lookup", "status": "error", "latency_ms": 5},
                      {"name": "lookup", "status": "ok", "latency_ms": 5}], []],
    )
    assert scored["response_chars"].to_list() == [0, 9, 2]
    assert scored["response_words"].to_list() == [0, 2, 1]
    assert scored["is_empty"].to_list() == [True, False, False]
    assert scored["tool_call_count"].to_list() == [0, 2, 0]
    assert scored["tool_error_count"].to_list() == [0, 1, 0]
    assert scored["latency_bucket"].to_list() == ["<1s", "3-10s", ">=10s"]
    assert scored["deterministic_low_score"].to_list() == [True, True, False]


def test_conversation_context_is_the_previous_turn():
    traces = pl.DataFrame({
        "conversation_id": ["c", "c", "d"], "turn_index": [1, 0, 0],
        "user_message": ["second q", "first q", "other"], "agent_response": ["a2", "a1", "x"],
    })
    ctx = dict(with_conversation_context(traces).select("user_message", "conversation_context").iter_rows())
    assert ctx == {"first q": "", "second q": "User: first q\nAgent: a1", "other": ""}
