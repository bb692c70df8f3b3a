import hashlib
import logging
import shutil
import time

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.demo.fake_openai import FakeOpenAIServer, simulate_verdict
from feedback_pipeline.scoring.columns import JUDGE
from feedback_pipeline.scoring.judge import (
    JUDGE_SCHEMA,
    JudgeCache,
    JudgeResource,
    judge_traces,
    parse_answer,
    select_for_judging,
)
from feedback_pipeline.rubrics import RUBRICS_DIR, load_rubric

KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
CATEGORIES = load_rubric("agent_quality", "v1").categories


def traces(n: int, *, forced_every: int = 0, prefix: str = "t") -> pl.DataFrame:
    ids = [f"{prefix}{i:05d}" for i in range(n)]
    return pl.DataFrame({
        "trace_id": ids,
        "user_message": [f"where is my order {i}?" for i in range(n)],
        "agent_response": [f"It ships tomorrow ({i})." for i in range(n)],
        "escalated": [bool(forced_every) and i % forced_every == 0 for i in range(n)],
        "thumbs": [None] * n,
    })


def truth_for(frame: pl.DataFrame) -> dict:
    cats = ("could_not_answer", "tone_wrong", "tool_failed", None)
    return {t: ("fail", cats[i % 3]) if i % 4 == 0 else ("pass", None)
            for i, t in enumerate(frame["trace_id"])}


def resource(server: FakeOpenAIServer, **kw) -> JudgeResource:
    kw = {"base_url": server.url, "model": "fake-judge-1", "api_key": KEY,
          "timeout_s": 0.3, "max_retries": 2, **kw}
    return JudgeResource(**kw)


@pytest.fixture(scope="module")
def rubric():
    return load_rubric("agent_quality", "v1")


@pytest.fixture
def cache():
    con = duckdb.connect()
    yield JudgeCache(con)
    con.close()


def judged_ok(out: pl.DataFrame) -> pl.Series:
    return out["judge_verdict"].is_not_null()


# -- happy path and output shape -----------------------------------------------
def test_happy_path_scores_every_trace_with_provenance(rubric, cache):
    frame = traces(40)
    truth = truth_for(frame)
    with FakeOpenAIServer(truth) as server:
        out, stats = judge_traces(frame, rubric, resource(
            server, input_usd_per_1m_tokens=1.0, output_usd_per_1m_tokens=2.0), cache)
        bodies = server.bodies()
    assert out.columns == ["trace_id", *JUDGE]
    assert dict(out.schema) == {"trace_id": pl.String, **JUDGE_SCHEMA}
    assert out["trace_id"].to_list() == frame["trace_id"].to_list()
    assert out["judge_error"].null_count() == 40 and judged_ok(out).all()
    expected = [simulate_verdict(t, truth, CATEGORIES) for t in frame["trace_id"]]
    assert out["judge_verdict"].to_list() == [e["verdict"] for e in expected]
    assert out["judge_failure_category"].to_list() == [e["failure_category"] for e in expected]
    assert out.filter(pl.col("judge_verdict") == "fail")["judge_failure_category"].null_count() == 0
    assert out.filter(pl.col("judge_verdict") == "pass")["judge_failure_category"].null_count() == out.filter(
        pl.col("judge_verdict") == "pass").height
    assert set(out["judge_rubric_id"]) == {"agent_quality"}
    assert set(out["judge_rubric_version"]) == {"v1"}
    assert set(out["judge_rubric_hash"]) == {rubric.content_hash}
    assert set(out["judge_model"]) == {"fake-judge-1"}
    assert out["judge_prompt_hash"].n_unique() == 40 and not out["judge_cached"].any()
    assert (out["judge_selection_prob"] == 1.0).all()
    assert stats["calls_made"] == 40 and stats["cached"] == 0 and stats["failed"] == 0
    assert stats["judge_configured"] and stats["structured_output"]
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert stats["estimated_cost_usd"] == pytest.approx(
        (stats["prompt_tokens"] * 1.0 + stats["completion_tokens"] * 2.0) / 1e6)
    assert stats["latency_p50_ms"] <= stats["latency_p95_ms"]
    body = bodies[0]
    assert body["temperature"] == 0
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["messages"][0]["content"].startswith(rubric.instructions)
    assert body["messages"][1]["content"].startswith("Reference: t")
    # the prompt hash is reproducible from exactly what was sent
    system, user = (m["content"] for m in body["messages"])
    trace_id = user.split("\n", 1)[0].removeprefix("Reference: ")
    sent_hash = hashlib.sha256(f"{system}\0{user}".encode()).hexdigest()
    assert out.filter(pl.col("trace_id") == trace_id)["judge_prompt_hash"][0] == sent_hash


def test_concurrency_is_bounded(rubric):
    with FakeOpenAIServer(latency_s=0.15) as server:
        start = time.perf_counter()
        out, _ = judge_traces(traces(12), rubric, resource(server, concurrency=4))
        elapsed = time.perf_counter() - start
        assert server.max_in_flight <= 4
    assert judged_ok(out).all() and elapsed >= 3 * 0.15


# -- faults --------------------------------------------------------------------
def test_429_waits_for_retry_after(rubric):
    with FakeOpenAIServer(script=["429"], retry_after_s=1.0) as server:
        out, stats = judge_traces(traces(1), rubric, resource(server))
        first, second = (r["time"] for r in server.requests)
    assert judged_ok(out).all() and stats["calls_made"] == 1
    # the client's own backoff would be <= 0.5 s: the 1 s gap is the server's Retry-After
    assert second - first >= 0.95


def test_500s_are_retried_then_recorded(rubric):
    with FakeOpenAIServer(script=["500", "500"]) as server:
        out, _ = judge_traces(traces(1), rubric, resource(server, max_retries=2))
        assert server.call_count == 3
    assert judged_ok(out).all()
    with FakeOpenAIServer(script=["500", "500"]) as server:
        out, stats = judge_traces(traces(1), rubric, resource(server, max_retries=1))
    assert out["judge_verdict"][0] is None
    assert out["judge_error"][0] == "HTTP 500: server error (max_retries=1)"
    assert stats["failed"] == 1


def test_timeouts_are_retried_then_recorded(rubric):
    with FakeOpenAIServer(script=["timeout"], timeout_sleep_s=1.0) as server:
        out, _ = judge_traces(traces(1), rubric, resource(server, max_retries=1))
    assert judged_ok(out).all()
    with FakeOpenAIServer(script=["timeout", "timeout"], timeout_sleep_s=1.0) as server:
        out, stats = judge_traces(traces(1), rubric, resource(server, max_retries=1))
    assert out["judge_verdict"][0] is None
    assert out["judge_error"][0].startswith("timeout: no answer within 0.3 s")
    assert stats["failed"] == 1


@pytest.mark.parametrize("fault, reason", [
    ("malformed", "not JSON"), ("wrong_enum", "is not"),
])
def test_bad_answers_are_asked_again_once_then_recorded(rubric, fault, reason):
    with FakeOpenAIServer(script=[fault]) as server:
        out, stats = judge_traces(traces(1), rubric, resource(server))
        assert server.call_count == 2
    assert judged_ok(out).all() and stats["calls_made"] == 2
    with FakeOpenAIServer(script=[fault, fault]) as server:
        out, stats = judge_traces(traces(1), rubric, resource(server))
        assert server.call_count == 2
    assert out["judge_verdict"][0] is None  # never counted as a pass
    assert out["judge_error"][0].startswith("invalid answer twice") and reason in out["judge_error"][0]


def test_endpoint_without_response_format_falls_back_to_plain_json(rubric):
    frame = traces(20)
    with FakeOpenAIServer(truth_for(frame), supports_response_format=False) as server:
        out, stats = judge_traces(frame, rubric, resource(server, concurrency=1))
        bodies = server.bodies()
    assert judged_ok(out).all() and stats["structured_output"] is False
    assert "response_format" in bodies[0] and "response_format" not in bodies[1]
    assert sum("response_format" in b for b in bodies) == 1  # switched off for the rest of the run


def test_parse_answer_is_strict_about_the_contract():
    ok = parse_answer('```json\n{"verdict": "pass", "failure_category": "none", "rationale": "ok"}\n```', CATEGORIES)
    assert ok == ({"verdict": "pass", "failure_category": None, "rationale": "ok"}, None)
    assert parse_answer('{"verdict": "fail", "failure_category": null, "rationale": "x"}', CATEGORIES)[1] \
        == "failure_category 'None' is not a rubric category"
    assert "must have failure_category null" in parse_answer(
        '{"verdict": "pass", "failure_category": "tone_wrong", "rationale": "x"}', CATEGORIES)[1]
    assert parse_answer('{"verdict": "pass", "failure_category": null}', CATEGORIES)[1] == "rationale missing"
    assert parse_answer("[1, 2]", CATEGORIES)[1] == "not a JSON object"
    assert parse_answer(None, CATEGORIES)[0] is None


def test_twenty_percent_faults_over_2000_calls_lose_nothing(rubric, cache):
    frame = traces(2000)
    with FakeOpenAIServer(truth_for(frame), fault_rate=0.2, retry_after_s=0.05,
                          timeout_sleep_s=0.6, seed=7) as server:
        out, stats = judge_traces(frame, rubric, resource(server, concurrency=64), cache)
        assert server.call_count >= 2000
    assert out.height == 2000 and out["trace_id"].to_list() == frame["trace_id"].to_list()
    scored, failed = judged_ok(out), out["judge_error"].is_not_null()
    assert (scored ^ failed).all()  # each trace is either scored or has a reason, never both
    assert 0 < failed.sum() < 100  # some traces exhaust their retries; most recover
    assert stats["failed"] == failed.sum() and stats["calls_made"] >= 2000
    assert out.filter(failed)["judge_failure_category"].null_count() == failed.sum()

    # Errors are not cached: a clean re-run calls exactly for the failed traces, then for none.
    with FakeOpenAIServer(truth_for(frame)) as server:
        out2, stats2 = judge_traces(frame, rubric, resource(server), cache)
        assert server.call_count == failed.sum() == stats2["calls_made"]
        assert judged_ok(out2).all() and stats2["cached"] == 2000 - failed.sum()
        out3, stats3 = judge_traces(frame, rubric, resource(server), cache)
        assert server.call_count == failed.sum() and stats3["calls_made"] == 0
    assert out3["judge_cached"].all() and stats3["cached"] == 2000
    assert out3["judge_verdict"].to_list() == out2["judge_verdict"].to_list()


# -- cache ---------------------------------------------------------------------
def test_rerun_makes_no_calls_and_a_rubric_bump_calls_only_for_the_new_rubric(tmp_path, cache):
    folder = tmp_path / "agent_quality"
    folder.mkdir()
    shutil.copy(RUBRICS_DIR / "agent_quality" / "v1.md", folder / "v1.md")
    v2_text = (folder / "v1.md").read_text().replace("version: v1", "version: v2", 1)
    (folder / "v2.md").write_text(v2_text + "\nA response that ignores an explicit request fails.\n")
    v1, v2 = load_rubric("agent_quality", "v1", tmp_path), load_rubric("agent_quality", "v2", tmp_path)
    frame = traces(30)
    with FakeOpenAIServer(truth_for(frame)) as server:
        judge_traces(frame, v1, resource(server), cache)
        assert server.call_count == 30
        out, stats = judge_traces(frame, v1, resource(server), cache)
        assert server.call_count == 30 and stats["calls_made"] == 0 and stats["cached"] == 30
        assert out["judge_cached"].all()
        out, stats = judge_traces(frame, v2, resource(server), cache)
        assert server.call_count == 60 and stats["cached"] == 0
        assert set(out["judge_rubric_version"]) == {"v2"} and not out["judge_cached"].any()
        judge_traces(frame, v1, resource(server), cache)
        judge_traces(frame, v2, resource(server), cache)
        assert server.call_count == 60
        # a new model is a new key too
        judge_traces(frame.head(5), v1, resource(server, model="other-judge"), cache)
        assert server.call_count == 65
    rows = cache.con.sql("SELECT rubric_version, count(*) FROM judge_cache GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("v1", 35), ("v2", 30)]


def test_cache_put_many_is_idempotent_and_skips_errors(cache):
    row = {c: "x" for c in JudgeCache.COLUMNS} | {"prompt_tokens": 1, "completion_tokens": 1}
    frame = pl.DataFrame([row | {"cache_key": "a"}, row | {"cache_key": "b", "verdict": None},
                          row | {"cache_key": "a"}])
    assert cache.put_many(frame) == 1
    assert cache.put_many(frame) == 0
    assert cache.get_many(["a", "b", "zzz"])["cache_key"].to_list() == ["a"]
    assert cache.get_many([]).columns == list(JudgeCache.COLUMNS)


# -- budgeted selection --------------------------------------------------------
def test_selection_is_exact_and_deterministic():
    frame = traces(100, forced_every=10).with_columns(
        thumbs=pl.when(pl.int_range(100) % 25 == 1).then(pl.lit("down")).otherwise(pl.lit("up")))
    picked = select_for_judging(frame, max_calls=30, seed=3)
    forced = picked.filter(pl.col("escalated") | (pl.col("thumbs") == "down"))
    assert forced.height == 14 and forced["judge_selected"].all()
    assert (forced["judge_selection_prob"] == 1.0).all()
    rest = picked.filter(~(pl.col("escalated") | (pl.col("thumbs") == "down")))
    assert rest["judge_selected"].sum() == 16
    assert (rest["judge_selection_prob"] == 16 / 86).all()
    again = select_for_judging(frame.sample(fraction=1.0, shuffle=True, seed=1), max_calls=30, seed=3)
    chosen = set(picked.filter("judge_selected")["trace_id"])
    assert set(again.filter("judge_selected")["trace_id"]) == chosen  # row order does not matter
    other = select_for_judging(frame, max_calls=30, seed=4)
    assert set(other.filter("judge_selected")["trace_id"]) != chosen

    everything = select_for_judging(frame, max_calls=None)
    assert everything["judge_selected"].all() and (everything["judge_selection_prob"] == 1.0).all()
    fits = select_for_judging(frame, max_calls=500)
    assert fits["judge_selected"].all() and (fits["judge_selection_prob"] == 1.0).all()
    over = select_for_judging(frame, max_calls=5)  # forced traces exceed the budget
    assert over["judge_selected"].sum() == 14
    assert select_for_judging(frame.clear(), max_calls=5).height == 0


def test_budget_limits_calls_and_stores_selection_probability(rubric):
    frame = traces(100, forced_every=10)
    with FakeOpenAIServer() as server:
        out, stats = judge_traces(frame, rubric, resource(server, max_judge_calls_per_week=30))
        assert server.call_count == 30
    assert stats["call_budget"] == 30 and stats["selected"] == 30
    not_judged = out.filter(pl.col("judge_verdict").is_null())
    assert not_judged.height == 70 and not_judged["judge_error"].null_count() == 70
    assert (not_judged["judge_selection_prob"] == 20 / 90).all()
    assert not_judged["judge_prompt_hash"].null_count() == 70
    escalated = out.filter(frame["escalated"])
    assert judged_ok(escalated).all() and (escalated["judge_selection_prob"] == 1.0).all()


def test_cost_budget_becomes_a_call_budget(rubric):
    frame = traces(50)
    prices = {"input_usd_per_1m_tokens": 1000.0, "output_usd_per_1m_tokens": 1000.0}
    with FakeOpenAIServer() as server:
        _, stats = judge_traces(frame, rubric, resource(server, max_cost_usd=10.0, **prices))
        assert server.call_count == stats["call_budget"]
    assert 0 < stats["call_budget"] < 50
    assert stats["estimated_cost_usd"] <= 10.0 * 1.2  # the pre-call estimate is close


# -- privacy -------------------------------------------------------------------
PII = {"email": "jane.roe@example.com", "phone": "+49 170 1234567", "card": "4111 1111 1111 1111",
       "iban": "DE89 3704 0044 0532 0130 00", "address": "221B Baker Street"}


def test_no_personal_data_reaches_the_endpoint(rubric):
    frame = traces(3).with_columns(
        user_message=pl.lit(f"I am {PII['email']}, call {PII['phone']}, I live at {PII['address']}"),
        agent_response=pl.lit(f"Refund to card {PII['card']} or IBAN {PII['iban']}. Order 1234 5678 9012 3456."),
        conversation_context=pl.lit(f"earlier: my mail is {PII['email']}"),
    )
    with FakeOpenAIServer() as server:
        out, _ = judge_traces(frame, rubric, resource(server))
        sent = str(server.bodies())
    assert judged_ok(out).all()
    for value in PII.values():
        assert value not in sent
    for placeholder in ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[ADDRESS]", "earlier: my mail is"):
        assert placeholder in sent
    assert "1234 5678 9012 3456" in sent  # not Luhn-valid: an order number stays
    with FakeOpenAIServer() as server:  # self-hosted endpoints may turn redaction off
        judge_traces(frame, rubric, resource(server, redact_pii=False))
        assert PII["email"] in str(server.bodies())


def test_api_key_never_leaves_in_results_errors_logs_or_cache(rubric, cache, caplog):
    frame = traces(5)
    res = resource(server := FakeOpenAIServer(script=["401"]))
    with server, caplog.at_level(logging.DEBUG):
        out, stats = judge_traces(frame, rubric, res, cache)
        headers = [r["headers"] for r in server.requests]
    assert any(h.get("authorization") == f"Bearer {KEY}" for h in headers)  # the key was used
    assert out["judge_error"].drop_nulls().to_list() == ["HTTP 401: authentication failed (check OPENAI_API_KEY)"]
    cached = cache.con.sql("SELECT * FROM judge_cache").pl()
    for text in (str(out.rows()), str(stats), str(cached.rows()), caplog.text, repr(res), str(res)):
        assert KEY not in text


# -- not configured ------------------------------------------------------------
def test_not_configured_gives_null_columns_without_any_network_call(rubric, cache, monkeypatch):
    def no_client(*_, **__):
        raise AssertionError("no client may be built when the judge is not configured")
    import openai  # the judge imports it only where it builds a client: patch it where it lives

    monkeypatch.setattr(openai, "AsyncOpenAI", no_client)
    frame = traces(10, forced_every=2)
    with FakeOpenAIServer() as server:
        for res in (JudgeResource(), JudgeResource(base_url=server.url), JudgeResource(model="m", base_url="")):
            assert not res.is_configured
            out, stats = judge_traces(frame, rubric, res, cache)
            assert out.columns == ["trace_id", *JUDGE] and dict(out.schema)["judge_cached"] == pl.Boolean
            assert all(out[c].null_count() == 10 for c in JUDGE)
            assert stats["judge_configured"] is False and stats["calls_made"] == 0
        assert server.call_count == 0


def test_from_env_leaves_unset_variables_out_so_dagster_runs(monkeypatch):
    for name in ("FEEDBACK_PIPELINE_JUDGE_BASE_URL", "FEEDBACK_PIPELINE_JUDGE_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    @dg.asset
    def judge_state(judge: JudgeResource) -> bool:
        return judge.is_configured

    result = dg.materialize([judge_state], resources={"judge": JudgeResource.from_env()})
    assert result.success and result.output_for_node("judge_state") is False

    monkeypatch.setenv("FEEDBACK_PIPELINE_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FEEDBACK_PIPELINE_JUDGE_MODEL", "m")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = dg.materialize([judge_state], resources={"judge": JudgeResource.from_env(concurrency=8)})
    assert result.success and result.output_for_node("judge_state") is True


# -- the demo judge's simulated disagreement -----------------------------------
def test_fake_judge_is_realistically_imperfect_and_biased_on_tone():
    truth = {f"x{i}": ("fail", ("tone_wrong", "wrong_information", "tool_failed")[i % 3])
             if i % 4 == 0 else ("pass", None) for i in range(20_000)}
    answers = {t: simulate_verdict(t, truth, CATEGORIES) for t in truth}
    agree = sum(answers[t]["verdict"] == v for t, (v, _) in truth.items()) / len(truth)
    tone = [t for t, (v, c) in truth.items() if c == "tone_wrong"]
    passes = [t for t, (v, _) in truth.items() if v == "pass"]
    tone_passed = sum(answers[t]["verdict"] == "pass" for t in tone) / len(tone)
    false_fail = sum(answers[t]["verdict"] == "fail" for t in passes) / len(passes)
    assert 0.85 <= agree <= 0.95
    assert 0.55 <= tone_passed <= 0.65
    assert 0.02 <= false_fail <= 0.04
    assert simulate_verdict("x1", truth, CATEGORIES) == answers["x1"]  # deterministic
    unknown = simulate_verdict("never-seen", truth, CATEGORIES)
    assert unknown == simulate_verdict("never-seen", {}, CATEGORIES)
