"""The demo world: deterministic, in the landing contract, and carrying the truths it claims.

A reference validator here classifies every landing line independently of the
generator, so the malformed/duplicate accounting in the summary is checked exactly.
"""

import gzip
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from feedback_pipeline.demo.world import (
    AGENTS, DEMO_FIRST_WEEK, MALFORMED_KINDS, TRUTH_COLUMNS, generate_turns, generate_world,
)
from feedback_pipeline.ingest.contract import (
    ESCALATION_REASONS, KNOWN_TOP_LEVEL_FIELDS, SOURCE_FIELDS, THUMBS_VALUES, TOOL_CALL_DTYPE, TOOL_STATUSES,
)
from feedback_pipeline.rubrics import failure_categories

SEED = 11
TURNS_PER_WEEK = 3_000  # ~900 dental turns a week: the planted effects stand well clear of noise
CATEGORIES = set(failure_categories("v1"))  # the rubric version the demo world draws from
# What every demo record carries: the contract fields but the optional ones naming a converted source.
RECORD_FIELDS = [f for f in KNOWN_TOP_LEVEL_FIELDS if f not in SOURCE_FIELDS]
STRINGS = ("trace_id", "conversation_id", "agent_id", "vertical", "channel", "intent", "user_id",
           "user_message", "agent_response", "prompt_version", "retrieval_version", "model")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("world")
    summary = generate_world(home, seed=SEED, turns_per_week=TURNS_PER_WEEK)
    return home, summary


@pytest.fixture(scope="module")
def turns():
    """The same simulator in memory, joined to its truth (for rates the files do not show)."""
    frame, truth = generate_turns(40_000, seed=5, weeks=8)
    return frame.unnest("feedback").join(truth.drop("agent_id"), on="trace_id", how="left")


def _read_lines(home: Path, path: str) -> list[bytes]:
    data = (home / path).read_bytes()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _classify(raw: bytes) -> tuple[str | None, dict | None]:
    """(malformed kind or None, the parsed record) for one landing line, per the contract."""
    if not raw.strip():
        return "blank_line", None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return "bad_json", None
    if not isinstance(record, dict):
        return "not_an_object", None
    if set(RECORD_FIELDS) - set(record):
        return "missing_field", None
    feedback, calls = record["feedback"], record["tool_calls"]
    typed = (all(isinstance(record[k], str) for k in (*STRINGS, "timestamp"))
             and all(type(record[k]) is int for k in ("turn_index", "latency_ms"))
             and isinstance(feedback, dict) and type(feedback.get("escalated")) is bool
             and type(feedback.get("user_rewrote")) is bool and isinstance(calls, list)
             and all(isinstance(c, dict) and isinstance(c.get("name"), str)
                     and type(c.get("latency_ms")) is int for c in calls))
    if not typed:
        return "mistyped_field", None
    try:
        stamp = datetime.fromisoformat(record["timestamp"])
    except ValueError:
        return "bad_timestamp", None
    if stamp.tzinfo is None:
        return "bad_timestamp", None
    if record["latency_ms"] < 0:
        return "negative_latency", None
    if feedback["thumbs"] not in (None, *THUMBS_VALUES):
        return "bad_thumbs", None
    reason = feedback["escalation_reason"]
    if reason is not None and reason not in ESCALATION_REASONS:
        return "unknown_escalation_reason", None
    if reason is not None and not feedback["escalated"]:
        return "reason_without_escalation", None
    if any(c.get("status") not in TOOL_STATUSES for c in calls):
        return "bad_tool_status", None
    return None, record


@pytest.fixture(scope="module")
def landed(world):
    """Every JSONL line, classified: (path, line number, kind, raw bytes, record)."""
    home, summary = world
    return [(path, n, *_classify(raw), raw)
            for path in summary["files"] if ".jsonl" in path
            for n, raw in enumerate(_read_lines(home, path), start=1)]


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(world, tmp_path):
    home, summary = world
    again = generate_world(tmp_path / "again", seed=SEED, turns_per_week=TURNS_PER_WEEK)
    assert again == summary

    def digest(root: Path, names: list[str]) -> dict[str, str]:
        return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}

    names = summary["files"] + summary["truth_files"]
    assert digest(tmp_path / "again", names) == digest(home, names)
    generate_world(tmp_path / "other", seed=SEED + 1, turns_per_week=TURNS_PER_WEEK)
    first = summary["files"][0]
    assert (tmp_path / "other" / first).read_bytes() != (home / first).read_bytes()


def test_generate_turns_is_deterministic_and_in_contract_shape():
    turns, truth = generate_turns(5_000, seed=3, weeks=2)
    again, _ = generate_turns(5_000, seed=3, weeks=2)
    assert turns.equals(again)
    assert not turns.equals(generate_turns(5_000, seed=4, weeks=2)[0])
    assert turns.height == truth.height == 5_000
    assert turns.schema["tool_calls"] == TOOL_CALL_DTYPE
    assert turns.schema["feedback"] == pl.Struct({"thumbs": pl.String, "escalated": pl.Boolean,
                                                  "escalation_reason": pl.String, "user_rewrote": pl.Boolean})
    assert list(turns.columns) == RECORD_FIELDS
    assert {c: turns.schema[c] for c in ("turn_index", "latency_ms", "timestamp")} == {
        "turn_index": pl.Int64, "latency_ms": pl.Int64, "timestamp": pl.String}
    assert truth.columns == list(TRUTH_COLUMNS) and truth.schema["week"] == pl.Date
    assert turns["trace_id"].n_unique() == 5_000
    assert truth["trace_id"].sort().equals(turns["trace_id"].sort())


def test_turns_respect_enums_weeks_and_conversation_structure(turns):
    assert turns["thumbs"].drop_nulls().is_in(THUMBS_VALUES).all()
    assert turns["escalation_reason"].drop_nulls().is_in(ESCALATION_REASONS).all()
    assert (turns["escalation_reason"].is_not_null() == turns["escalated"]).all()
    calls = turns.select(pl.col("tool_calls").explode()).unnest("tool_calls").drop_nulls("name")
    assert calls["status"].is_in(TOOL_STATUSES).all() and (calls["latency_ms"] >= 0).all()
    assert (turns["latency_ms"] >= 0).all()
    assert set(turns["agent_id"].unique()) == set(AGENTS)
    utc = pl.Series([datetime.fromisoformat(t).astimezone(timezone.utc) for t in turns["timestamp"]])
    monday = turns["week"].cast(pl.Datetime("us", "UTC"))
    assert ((utc >= monday) & (utc < monday + timedelta(days=7))).all()
    assert set(utc.dt.weekday()) == set(range(1, 8))
    assert turns["week"].dt.weekday().unique().to_list() == [1]
    suffixes = turns["timestamp"].str.extract(r"(Z|[+-]\d\d:\d\d)$")
    assert suffixes.null_count() == 0 and (suffixes == "Z").mean() > 0.3 and (suffixes != "Z").mean() > 0.2
    per_conversation = turns.group_by("conversation_id").agg(
        n=pl.len(), top=pl.col("turn_index").max(), distinct=pl.col("turn_index").n_unique(),
        agents=pl.col("agent_id").n_unique(), users=pl.col("user_id").n_unique())
    assert (per_conversation["top"] == per_conversation["n"] - 1).all()
    assert (per_conversation["distinct"] == per_conversation["n"]).all()
    assert (per_conversation["agents"] == 1).all() and (per_conversation["users"] == 1).all()
    assert per_conversation["n"].max() == 6 and (per_conversation["n"] > 1).mean() > 0.5


def test_truth_is_consistent(turns):
    fail = turns["true_verdict"] == "fail"
    assert turns["true_verdict"].is_in(["pass", "fail"]).all()
    assert (turns["true_failure_category"].is_not_null() == fail).all()
    assert set(turns["true_failure_category"].drop_nulls().unique()) == CATEGORIES
    policy = (turns["true_failure_category"] == "policy_violation").fill_null(False).mean()
    assert 0.002 < policy < 0.009
    for agent, rows in turns.group_by("agent_id"):
        assert 0.10 <= (rows["true_verdict"] == "fail").mean() <= 0.21, agent


def test_feedback_is_sparse_negative_noisy_and_dominated_by_heavy_clickers(turns):
    fail = turns["true_verdict"] == "fail"
    rated = turns["thumbs"].is_not_null()
    assert 0.035 < rated.mean() < 0.065
    assert rated.filter(fail).mean() > 5 * rated.filter(~fail).mean()
    assert rated.filter(fail).mean() < 0.3  # most true failures are never rated
    ratings = turns.filter(rated)
    assert (ratings["thumbs"] == "down").mean() > 0.58
    noise = ratings.group_by("true_verdict").agg(odd=pl.when(pl.col("true_verdict") == "fail")
                                                 .then(pl.col("thumbs") == "up").otherwise(pl.col("thumbs") == "down")
                                                 .mean())
    assert (noise["odd"] > 0.03).all()  # thumbs-up on failures and thumbs-down on passes both occur
    per_user = ratings.group_by("user_id").len().sort("len", descending=True)
    assert per_user["len"].head(24).sum() > 0.12 * ratings.height
    assert 0.02 < turns["escalated"].mean() < 0.045
    escalated_failures = turns.filter(fail & turns["escalated"])
    mapped = escalated_failures["true_failure_category"].replace({"could_not_answer": "agent_could_not_answer"})
    assert (escalated_failures["escalation_reason"] == mapped).mean() > 0.7
    assert (turns.filter(~fail & turns["escalated"])["escalation_reason"] == "user_requested_human").mean() > 0.6
    assert turns["user_rewrote"].filter(fail).mean() > 3 * turns["user_rewrote"].filter(~fail).mean()


def test_turns_in_a_conversation_are_correlated(turns):
    nxt = turns.sort("conversation_id", "turn_index").with_columns(
        next_fail=(pl.col("true_verdict") == "fail").shift(-1).over("conversation_id"))
    paired = nxt.drop_nulls("next_fail")
    after_fail = paired.filter(pl.col("true_verdict") == "fail")["next_fail"].mean()
    after_pass = paired.filter(pl.col("true_verdict") == "pass")["next_fail"].mean()
    assert after_fail > after_pass + 0.08


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = int(d) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _iban_ok(iban: str) -> bool:
    iban = iban.replace(" ", "")
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def test_text_carries_pii_refusals_disclaimers_and_tool_errors(turns):
    users = turns["user_message"]
    card_re = r"(?:card|card number is|charge was on) ([45]\d{3}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4})\b"
    cards = [re.sub(r"\D", "", c) for m in users.to_list() for c in re.findall(card_re, m)]
    ibans = users.str.extract_all(r"\b(?:DE|ES)\d{2}(?: ?\d{4}){4,5}(?: ?\d{2})?\b").explode().drop_nulls().to_list()
    assert len(cards) > 50 and all(_luhn_ok(c) for c in cards)
    assert len(ibans) > 20 and all(_iban_ok(i) for i in ibans)
    assert users.str.contains(r"[\w.]+@[\w.]+\.\w+").sum() > 100
    assert users.str.contains(r"\+?\d[\d ()-]{7,}\d").sum() > 100
    assert users.str.contains(r"\d+ [A-ZÄÖÜ][\w ]+(Street|Avenue|Drive|straße|allee|Paix|Mayor),").sum() > 30
    assert not (users.str.contains("{", literal=True) | turns["agent_response"].str.contains("{", literal=True)).any()

    responses = turns["agent_response"]
    refusal = responses.str.contains("I'm sorry, but I can't help with that", literal=True)
    cna = (turns["true_failure_category"] == "could_not_answer").fill_null(False)
    passing = turns["true_verdict"] == "pass"
    assert refusal.filter(cna).mean() > 0.15 and refusal.filter(passing).mean() < 0.02
    disclaimer = responses.str.contains("Please note that|I'm not a medical professional")
    assert disclaimer.filter(~passing).mean() > disclaimer.filter(passing).mean()
    assert responses.str.contains("I'm not a medical professional", literal=True).filter(
        turns["agent_id"] == "dental_front_desk").any()
    lengths = responses.str.len_chars()
    assert lengths.min() < 60 and lengths.max() > 300

    any_error = turns["tool_calls"].list.eval(pl.element().struct.field("status") == "error").list.any()
    tool_failed = (turns["true_failure_category"] == "tool_failed").fill_null(False)
    has_calls = turns["tool_calls"].list.len() > 0
    assert has_calls.filter(tool_failed).all()
    assert any_error.filter(tool_failed).mean() > 0.8
    assert any_error.filter(has_calls & ~tool_failed).mean() < 0.05
    called = turns.filter(has_calls).select(pl.col("tool_calls").list.first().struct.field("name"))[:, 0]
    assert {"lookup_order", "book_appointment", "search_flights"} <= set(called)


def test_agent_subset_and_unknown_agent():
    turns, _ = generate_turns(300, seed=1, agents=["travel"])
    assert turns["agent_id"].unique().to_list() == ["travel"]
    with pytest.raises(ValueError, match="unknown agents"):
        generate_turns(10, seed=1, agents=["pizza"])


def test_malformed_lines_match_the_summary_exactly(world, landed):
    home, summary = world
    counts: dict[str, int] = {}
    for _, _, kind, _, _ in landed:
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    assert {k: counts.get(k, 0) for k in MALFORMED_KINDS} == summary["malformed_written"]
    assert all(v >= 1 for v in summary["malformed_written"].values())
    assert counts.get("blank_line", 0) == summary["blank_lines_written"] > 0
    log = pl.read_parquet(home / "demo_truth/injected_records.parquet")
    logged = {(f"landing/{r['source_file']}", r["source_line"]): r["kind"] for r in log.iter_rows(named=True)}
    for path, line, kind, _, _ in landed:
        if kind:
            assert logged[(path, line)] == kind


def test_duplicates_and_accounting(world, landed):
    home, summary = world
    valid = [(path, record, raw) for path, _, kind, record, raw in landed if kind is None]
    first_seen: dict[str, bytes] = {}
    exact = conflicting = 0
    for path, record, raw in valid:
        seen = first_seen.setdefault(record["trace_id"], raw)
        if seen is not raw:
            assert path.startswith("landing/resend/")
            exact += seen == raw
            conflicting += seen != raw
    assert {"exact": exact, "conflicting": conflicting} == summary["duplicates_written"]
    assert exact > 0 and conflicting > 0
    parquet_ids: list[str] = []
    for path in summary["files"]:
        if path.endswith(".parquet"):
            frame = pl.read_parquet(home / path)
            assert frame.schema["tool_calls"] == TOOL_CALL_DTYPE
            assert frame.schema["feedback"] == pl.Struct({
                "thumbs": pl.String, "escalated": pl.Boolean, "escalation_reason": pl.String,
                "user_rewrote": pl.Boolean})
            parquet_ids += frame["trace_id"].to_list()
    malformed = sum(summary["malformed_written"].values())
    assert summary["records_written"] == len(valid) + len(parquet_ids) + malformed
    assert summary["turns_written"] == len(first_seen) + len(parquet_ids)
    truth = pl.read_parquet(home / "demo_truth/turn_truth.parquet")
    assert set(truth["trace_id"]) == set(first_seen) | set(parquet_ids)
    assert truth.height == summary["turns_written"]


def test_formats_and_unknown_extra_fields(world, landed):
    home, summary = world
    files = summary["files"]
    assert any(f.endswith(".jsonl.gz") for f in files) and any(f.endswith(".jsonl") for f in files)
    assert any(f.endswith(".parquet") for f in files)
    assert len({f.split("/")[2] for f in files if f.startswith("landing/demo/")}) == 8
    extras = [r for _, _, kind, r, _ in landed if kind is None and set(r) - set(KNOWN_TOP_LEVEL_FIELDS)]
    assert extras and all(set(r) - set(KNOWN_TOP_LEVEL_FIELDS) == {"locale"} for r in extras)
    with_column = [f for f in files if f.endswith(".parquet")
                   and "client_version" in pl.read_parquet_schema(home / f)]
    assert len(with_column) == 1
    n_extra_parquet = pl.read_parquet(home / with_column[0]).height
    unique_extras = len({r["trace_id"] for r in extras})
    assert summary["extra_field_records"] == unique_extras + n_extra_parquet


def _joined(world) -> pl.DataFrame:
    """Valid landed records (first copy of each trace) with their truth."""
    home, summary = world
    frames = [pl.read_parquet(home / f) for f in summary["files"] if f.endswith(".parquet")]
    for f in summary["files"]:
        if ".jsonl" in f:
            records = [r for k, r in map(_classify, _read_lines(home, f)) if k is None]
            frames.append(pl.DataFrame([{k: r[k] for k in RECORD_FIELDS} for r in records],
                                       schema=frames[0].select(RECORD_FIELDS).schema))
    landed = pl.concat([f.select(RECORD_FIELDS) for f in frames]).unique("trace_id", keep="first")
    truth = pl.read_parquet(home / "demo_truth/turn_truth.parquet")
    return landed.unnest("feedback").join(truth.drop("agent_id"), on="trace_id", validate="1:1")


def test_planted_releases_are_in_the_truth(world):
    home, _ = world
    report = json.loads((home / "demo_truth/releases.json").read_text())
    frame = _joined(world).with_columns(
        fail=pl.col("true_verdict") == "fail", chars=pl.col("agent_response").str.len_chars(),
        down=pl.col("thumbs") == "down", offset=(pl.col("week") - DEMO_FIRST_WEEK).dt.total_days() // 7)

    def rate(agent: str, cond: pl.Expr, what: str = "fail") -> float:
        return frame.filter((pl.col("agent_id") == agent) & cond)[what].mean()

    releases = {r["release_id"]: r for r in report["releases"]}
    dental = releases["dental_prompt_v4"]
    assert (dental["true_failure_rate_before"], dental["true_failure_rate_after"]) == (0.18, 0.11)
    before, after = rate("dental_front_desk", pl.col("offset") < 3), rate("dental_front_desk", pl.col("offset") >= 3)
    assert before - after > 0.04
    assert abs(dental["realized_before"]["failure_rate"] - before) < 0.01

    refunds = frame.filter(pl.col("agent_id") == "refunds").with_columns(
        wrong=(pl.col("true_failure_category") == "wrong_information").fill_null(False))
    kb6 = pl.col("retrieval_version") == "refunds-kb-v6"
    assert refunds.filter(kb6)["wrong"].mean() > 2 * refunds.filter(~kb6)["wrong"].mean()
    assert refunds.filter(kb6)["fail"].mean() - refunds.filter(~kb6)["fail"].mean() > 0.025
    assert set(refunds.filter(pl.col("offset") >= 4)["retrieval_version"]) == {"refunds-kb-v6"}

    travel = frame.filter(pl.col("agent_id") == "travel")
    ab = travel.filter(pl.col("offset") == 5)["prompt_version"].value_counts(normalize=True)
    assert set(ab["prompt_version"]) == {"travel-v7", "travel-v8-concise"}
    assert ab["proportion"].min() > 0.4
    concise = pl.col("prompt_version") == "travel-v8-concise"
    old, new = travel.filter(~concise), travel.filter(concise)
    assert new["chars"].mean() < 0.7 * old["chars"].mean()
    assert new["down"].mean() < old["down"].mean()  # the proxy improves ...
    assert new["fail"].mean() > old["fail"].mean() + 0.02  # ... while true quality gets worse
    assert releases["travel_prompt_v8_concise"]["realized_after"]["refusal_rate"] > \
        2 * releases["travel_prompt_v8_concise"]["realized_before"]["refusal_rate"]

    aa = report["aa_null"]
    assert aa["dimension"] == "model" and releases[aa["release_id"]]["expected_effect"] == "none"
    r2 = pl.col("model") == releases[aa["release_id"]]["after"]
    same_prompt = pl.col("prompt_version") == "dental-v4"
    assert abs(rate("dental_front_desk", r2 & same_prompt) - rate("dental_front_desk", ~r2 & same_prompt)) < 0.03
    null = report["null_agent_week"]
    assert null in report["unchanged_agent_weeks"]
    weeks = frame.filter(pl.col("agent_id") == null["agent_id"])
    for column in ("prompt_version", "retrieval_version", "model"):
        by_week = weeks.group_by("week").agg(pl.col(column).unique())
        assert by_week.filter(pl.col("week").cast(pl.String) == null["week"])[column].to_list() == \
            by_week.filter(pl.col("week").cast(pl.String) == null["compared_to"])[column].to_list()
