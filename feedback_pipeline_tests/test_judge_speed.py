"""What keeps the judge path fast without changing its answers: prompts only for the
judged rows, connections reused, no warehouse connection held during the calls, and a
fake endpoint that speaks enough HTTP/1.1 for any client."""

import gc
import http.client
import json
import socket
from contextlib import contextmanager

import duckdb
import polars as pl
import pytest

from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.scoring.judge import (
    JudgeCache,
    JudgeResource,
    add_hashes,
    build_prompts,
    call_budget,
    completion_fields,
    judge_traces,
    prepare_rows,
    select_for_judging,
    system_prompt,
)
from feedback_pipeline.rubrics import load_rubric

PII_TEXT = "mail jane.roe@example.com, card 4111 1111 1111 1111, call +49 170 1234567"


@pytest.fixture(scope="module")
def rubric():
    return load_rubric("agent_quality", "v1")


def traces(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "trace_id": [f"s{i:04d}" for i in range(n)],
        "user_message": [f"{PII_TEXT} order {i}" if i % 3 == 0 else f"where is order {i}?" for i in range(n)],
        "agent_response": [f"It ships tomorrow ({i})." for i in range(n)],
        "escalated": [i % 7 == 0 for i in range(n)],
        "thumbs": ["down" if i % 11 == 0 else None for i in range(n)],
        "conversation_context": [f"User: hi {i}\nAgent: hello" if i % 2 else None for i in range(n)],
    })


@pytest.mark.parametrize("budget", [
    {"max_judge_calls_per_week": 30},
    {"max_cost_usd": 0.4, "input_usd_per_1m_tokens": 10.0},
    {},
])
def test_prepare_rows_equals_building_every_prompt(rubric, budget):
    """Prompts are built for the selected rows only, yet hashes, keys and selection are those
    of building all prompts first."""
    frame = traces(120)
    res = JudgeResource(base_url="http://127.0.0.1:9/v1", model="m", **budget)
    rows, budget_used = prepare_rows(frame, rubric, res)

    everything = add_hashes(build_prompts(frame, redact=True), rubric, res)
    expected_budget = call_budget(res, system_prompt(rubric), everything)
    selected = select_for_judging(frame.select("trace_id", "escalated", "thumbs"), expected_budget)
    expected = pl.concat([everything, selected.drop("trace_id", "escalated", "thumbs")], how="horizontal")
    on = pl.col("judge_selected")
    columns = ["trace_id", "judge_selected", "judge_selection_prob",
               *(pl.when(on).then(c).alias(c) for c in ("user_prompt", "judge_prompt_hash", "cache_key"))]
    assert budget_used == expected_budget
    left_out = rows.filter(~on).height
    assert (0 < left_out < 120) if budget else left_out == 0
    assert rows.select(columns).equals(expected.select(columns))
    assert rows.filter(~on)["user_prompt"].null_count() == rows.filter(~on).height


def test_client_reuses_its_connections(rubric):
    with FakeOpenAIServer() as server:
        out, stats = judge_traces(traces(200), rubric, JudgeResource(
            base_url=server.url, model="m", api_key="k", concurrency=4))
        assert stats["calls_made"] == 200 and out["judge_verdict"].is_not_null().all()
        assert server.connections_opened <= 4


def test_cache_holds_no_connection_while_the_judge_is_called(rubric, tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    opened = []  # True while a connection is open

    @contextmanager
    def connect():
        con = duckdb.connect(path)
        opened.append(True)
        try:
            yield con
        finally:
            con.close()
            opened.pop()

    class Watching(FakeOpenAIServer):
        def _completion(self, body, fault):
            self.held.append(bool(opened))
            return super()._completion(body, fault)

    frame = traces(20)
    with Watching() as server:
        server.held = []
        res = JudgeResource(base_url=server.url, model="m", api_key="k")
        out, stats = judge_traces(frame, rubric, res, JudgeCache(connect=connect))
        assert len(server.held) == 20 and not any(server.held)
        again, stats2 = judge_traces(frame, rubric, res, JudgeCache(connect=connect))
    assert stats["calls_made"] == 20 and stats2["calls_made"] == 0 and again["judge_cached"].all()
    assert not opened
    with duckdb.connect(path) as con:
        assert con.execute("SELECT count(*) FROM judge_cache").fetchone()[0] == 20
    with pytest.raises(ValueError):
        JudgeCache()


def test_collector_settings_are_restored(rubric):
    before = gc.get_threshold()
    with FakeOpenAIServer() as server:
        judge_traces(traces(5), rubric, JudgeResource(base_url=server.url, model="m", api_key="k"))
    assert gc.get_threshold() == before


def test_completion_fields_never_raise():
    ok = json.dumps({"choices": [{"message": {"content": "{}"}}],
                     "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    assert completion_fields(ok) == ("{}", 7, 3)
    assert completion_fields(json.dumps({"choices": [{"message": {"content": None}}]})) == (None, 0, 0)
    for bad in ("", "not json", "[]", '{"choices": []}', '{"choices": [{"message": 3}]}', '{"choices": null}'):
        assert completion_fields(bad) == (None, 0, 0)


def test_fake_endpoint_speaks_http_1_1():
    with FakeOpenAIServer() as server:
        con = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        con.request("GET", "/v1/models")
        models = con.getresponse()
        assert models.status == 200 and json.loads(models.read())["data"][0]["id"] == "fake-judge-1"
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Reference: x1\n\nhi"}]})
        con.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        answer = con.getresponse()  # same connection: keep-alive
        assert answer.status == 200
        content = json.loads(answer.read())["choices"][0]["message"]["content"]
        assert '"verdict"' in content
        con.request("POST", "/v1/nowhere", body="{}")
        missing = con.getresponse()
        assert missing.status == 404 and missing.read()
        con.request("PUT", "/v1/chat/completions", body="{}")
        assert con.getresponse().status == 501
        con.close()
        assert server.connections_opened == 1
        assert [r["path"] for r in server.requests] == ["/v1/models", "/v1/chat/completions", "/v1/nowhere"]
        assert server.call_count == 1

        # A chunked body is refused before it is read: send only the head (the server
        # closes after its 411, so a client still sending the body could get a reset).
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.1 411")


def test_fake_endpoint_stops_with_idle_and_stalled_connections():
    server = FakeOpenAIServer(script=["timeout"], timeout_sleep_s=30).start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    idle.request("GET", "/v1/models")
    idle.getresponse().read()  # left open
    stalled = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    stalled.request("POST", "/v1/chat/completions", body="{}")  # sleeps 30 s on the server
    server.stop()  # must not wait for either
    assert not server._thread.is_alive()
    idle.close()
    stalled.close()
