import json
import re
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.demo.fake_openai import FakeOpenAIServer
from feedback_pipeline.evalset.schemas import CONTEXT_DTYPE
from feedback_pipeline.impact.replay import (
    REPLAY_SCHEMA,
    AgentReplayResource,
    ReplayCache,
    paired_summary,
    replay_cases,
)
from feedback_pipeline.scoring.judge import JudgeResource
from feedback_pipeline.rubrics import load_rubric

GOOD = "Your refund for order {} was issued yesterday."
BAD = "I cannot help with that."
MODELS = {"p1": "agent-old", "p2": "agent-new"}
_CASE = re.compile(r"order (\d+)")


def answers_well(model: str, i: int) -> bool:
    """The planted truth: the old version solves odd cases; the new one also half of the others."""
    return i % 2 == 1 or (model == "agent-new" and i % 4 == 0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops bursts of connections (1 s SYN retry)


class FakeAgent:
    """A loopback OpenAI-compatible agent: canned answers by model and case number; 500 for "agent-down"
    and, for "agent-flaky", on every tenth case (the others answered as "agent-new")."""

    def __init__(self):
        self.bodies, self._lock = [], threading.Lock()
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with agent._lock:
                    agent.bodies.append(body)
                model = body["model"]
                if model == "agent-down":
                    return self._send(500, {"error": {"message": "down", "type": "server_error"}})
                i = int(_CASE.findall(body["messages"][-1]["content"])[-1])
                if model == "agent-flaky" and i % 10 == 0:  # fails every tenth case, answers the rest as the new one
                    return self._send(500, {"error": {"message": "overloaded", "type": "server_error"}})
                model = "agent-new" if model == "agent-flaky" else model
                text = GOOD.format(i) if answers_well(model, i) else BAD
                self._send(200, {
                    "id": f"c{i}", "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = _Server(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def call_count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def __enter__(self):
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


class ContentJudge(FakeOpenAIServer):
    """The demo judge (with its noise), its truth read from the agent response it is shown."""

    def _completion(self, body, fault):
        prompt = body["messages"][-1]["content"]
        reference = re.search(r"^Reference:\s*(\S+)", prompt, re.M).group(1)
        response = prompt.split("Agent response:\n", 1)[1]
        with self._lock:
            self.truth[reference] = ("pass", None) if "was issued" in response else ("fail", "could_not_answer")
        return super()._completion(body, fault)


def cases(n_test: int = 100) -> pl.DataFrame:
    """A latest snapshot (n_test test cases, 4 dev, 2 of them canary) and an older one."""
    rows = []
    for i in range(n_test + 4):
        split = "test" if i < n_test else "dev"
        rows.append({"snapshot_id": "refunds@2026-02-02", "week": date(2026, 2, 2), "agent_id": "refunds",
                     "case_id": f"k{i}", "split": split, "canary": i < 5 or i >= n_test + 2,
                     "verdict": "fail" if i % 2 == 0 else "pass",
                     "user_message": f"Where is the refund for order {i}?",
                     "context": [{"turn_index": 0, "user_message": f"Hi, about order {i}",
                                  "agent_response": "Sure, what do you need?"}] if i % 3 == 0 else []})
    rows.append({**rows[0], "snapshot_id": "refunds@2026-01-26", "week": date(2026, 1, 26), "case_id": "old0"})
    return pl.DataFrame(rows, schema_overrides={"context": CONTEXT_DTYPE})


@pytest.fixture(scope="module")
def rubric():
    return load_rubric("agent_quality", "v1")


@pytest.fixture(scope="module")
def servers():
    with FakeAgent() as agent, ContentJudge() as judge:
        yield agent, judge


def resources(servers, **agent_kw):
    agent, judge = servers
    return (AgentReplayResource(base_url=agent.url, models=MODELS, max_retries=0, timeout_s=5, **agent_kw),
            JudgeResource(base_url=judge.url, model="fake-judge-1", timeout_s=5, max_retries=1,
                          max_judge_calls_per_week=3))  # a budget the replay must lift


def test_planted_improvement_is_found_and_a_rerun_makes_no_new_calls(servers, rubric):
    agent_server, judge_server = servers
    agent, judge = resources(servers)
    con = duckdb.connect()
    cache = ReplayCache(con)
    a0, j0 = agent_server.call_count, judge_server.call_count
    out = replay_cases(cases(), ("p1", "p2"), agent, judge, rubric, cache)
    assert dict(out.schema) == REPLAY_SCHEMA
    assert out.height == 102  # 100 test + 2 dev canary cases
    assert agent_server.call_count - a0 == 2 * 102 and judge_server.call_count - j0 == 2 * 102
    assert set(out["before_model"]) == {"agent-old"} and set(out["after_model"]) == {"agent-new"}
    assert out["before_verdict"].null_count() == 0 and out["after_verdict"].null_count() == 0
    assert not out["before_agent_cached"].any()
    summary = paired_summary(out)
    overall = summary["overall"]
    assert summary["n_complete"] == 102 and summary["before_version"] == "p1" and summary["after_version"] == "p2"
    # planted: +25 points; the fake judge's noise (3 % false fails, 6 % missed fails) blurs it a little
    assert overall["method"] == "mcnemar" and overall["p_value"] < 0.01
    assert 0.1 < overall["effect"] < 0.35 and overall["ci_low"] > 0
    assert summary["canary"]["n_before"] == summary["n_canary"] == 7

    again = replay_cases(cases(), ("p1", "p2"), agent, judge, rubric, cache)
    assert agent_server.call_count - a0 == 2 * 102 and judge_server.call_count - j0 == 2 * 102
    assert again["before_agent_cached"].all() and again["after_agent_cached"].all()
    assert again["after_judge_cached"].all()
    assert again.drop(pl.selectors.ends_with("_cached")).equals(out.drop(pl.selectors.ends_with("_cached")))
    assert paired_summary(again)["agent_answers_cached"] == 204
    con.close()


def test_canary_always_included_and_only_the_latest_snapshot(servers, rubric):
    agent, judge = resources(servers)
    out = replay_cases(cases(n_test=6), ("p1", "p2"), agent, judge, rubric)
    assert out["case_id"].to_list() == ["k0", "k1", "k2", "k3", "k4", "k5", "k8", "k9"]  # k6, k7: dev, no canary
    assert out.filter(pl.col("split") == "dev")["canary"].all()
    assert out["canary"].sum() == 7 and set(out["snapshot_id"]) == {"refunds@2026-02-02"}
    assert out["gold_verdict"].to_list()[:2] == ["fail", "pass"]
    summary = paired_summary(out)
    assert summary["canary"]["n_before"] == 7 and summary["overall"]["n_before"] == 8


def test_messages_carry_context_system_prompt_and_params_into_the_cache_key(servers, rubric):
    agent_server, _ = servers
    agent, judge = resources(servers, system_prompt="You are the refunds agent.")
    con = duckdb.connect()
    cache = ReplayCache(con)
    start = agent_server.call_count
    first = replay_cases(cases(n_test=3), ("p1", "p2"), agent, judge, rubric, cache)
    bodies = agent_server.bodies[start:]
    k0 = next(b for b in bodies if b["messages"][-1]["content"].endswith("order 0?") and b["model"] == "agent-old")
    assert [m["role"] for m in k0["messages"]] == ["system", "user", "assistant", "user"]
    assert k0["messages"][1]["content"] == "Hi, about order 0" and k0["temperature"] == 0
    n = agent_server.call_count
    replay_cases(cases(n_test=3), ("p1", "p2"), agent, judge, rubric, cache)
    assert agent_server.call_count == n  # same params: all cached
    hotter, _ = resources(servers, system_prompt="You are the refunds agent.", temperature=0.7)
    replay_cases(cases(n_test=3), ("p1", "p2"), hotter, judge, rubric, cache)
    assert agent_server.call_count == n + 2 * first.height  # a sampling change is a miss
    con.close()


def test_agent_failures_become_row_errors_and_incomplete_pairs(servers, rubric):
    agent, judge = resources(servers)
    agent = AgentReplayResource(base_url=agent.base_url, models={"p1": "agent-old", "p9": "agent-down"},
                                max_retries=0, timeout_s=5)
    out = replay_cases(cases(n_test=3), ("p1", "p9"), agent, judge, rubric)
    assert out["after_answer"].null_count() == out.height and out["before_verdict"].null_count() == 0
    assert out["after_error"].str.contains("HTTP 500").all()
    summary = paired_summary(out)
    assert summary["overall"] is None and summary["n_incomplete"] == out.height
    unconfigured = replay_cases(cases(n_test=3), ("p1", "p2"), AgentReplayResource(), judge, rubric)
    assert unconfigured["before_error"].str.contains("not configured").all()
    empty = replay_cases(cases().clear(), ("p1", "p2"), agent, judge, rubric)
    assert empty.is_empty() and paired_summary(empty)["overall"] is None


def test_from_env_leaves_unset_variables_out(monkeypatch):
    monkeypatch.delenv("FEEDBACK_PIPELINE_AGENT_BASE_URL", raising=False)
    monkeypatch.delenv("FEEDBACK_PIPELINE_AGENT_API_KEY", raising=False)

    @dg.asset
    def replay_state(agent: AgentReplayResource) -> tuple:
        return agent.is_configured, agent.model_for("p2")

    result = dg.materialize([replay_state], resources={"agent": AgentReplayResource.from_env()})
    assert result.success and result.output_for_node("replay_state") == (False, "p2")
    monkeypatch.setenv("FEEDBACK_PIPELINE_AGENT_BASE_URL", "http://127.0.0.1:9/v1")
    result = dg.materialize([replay_state], resources={"agent": AgentReplayResource.from_env(models=MODELS)})
    assert result.success and result.output_for_node("replay_state") == (True, "agent-new")



def test_replay_cache_keeps_answers_only():
    con = duckdb.connect()
    cache = ReplayCache(con)
    frame = pl.DataFrame({"cache_key": ["k1", "k2"], "case_id": ["c1", "c2"], "model": ["m", "m"],
                          "answer": ["fine", None], "prompt_tokens": [3, 4], "completion_tokens": [5, 6]})
    cache.put_many(frame)
    stored = con.execute("SELECT * FROM replay_cache").pl()
    assert stored.columns == [*ReplayCache.COLUMNS, "created_at"]
    assert stored["cache_key"].to_list() == ["k1"]  # a failed call (no answer) is not cached
    cache.put_many(frame.with_columns(answer=pl.lit("later")))  # k1 is written once; k2 now has an answer
    assert sorted(cache.get_many(["k1", "k2", "k3"]).select("cache_key", "answer").rows()) == [
        ("k1", "fine"), ("k2", "later")]
    con.close()
