"""Eval-set snapshots: stable split, grow-only weeks, fixed canary, hash, dedup, exports, DPO."""

import hashlib
import random
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import duckdb
import polars as pl
import pytest

from feedback_pipeline.evalset.candidates import candidate_cases
from feedback_pipeline.evalset.canonical import content_hash
from feedback_pipeline.evalset.config import EvalSetConfig
from feedback_pipeline.evalset.diff import diff_snapshots
from feedback_pipeline.evalset.exports import ExportConflictError, export_snapshot
from feedback_pipeline.evalset.ids import SPLIT_SALT, stable_split
from feedback_pipeline.evalset.known_labels import labels_as_of
from feedback_pipeline.evalset.manifest import manifest
from feedback_pipeline.evalset.preference_pairs import check_no_heldout_leak, dpo_pairs
from feedback_pipeline.evalset.snapshot import build_snapshot
from feedback_pipeline.publish import EXAMPLE_QUERIES, publish_table, write_analyst_db
from feedback_pipeline.labels.parse import escalation_labels

W1, W2, W3 = date(2026, 11, 2), date(2026, 11, 9), date(2026, 11, 16)
CREATED = datetime(2026, 11, 23, tzinfo=timezone.utc)
VOCAB = ("refund order shoes parcel courier invoice warranty size colour return label "
         "address payment card voucher discount delay broken missing wrong late store "
         "exchange jacket dress boots receipt tracking email phone weekend monday").split()
CATS = ("could_not_answer", "wrong_information", "tone_wrong", "tool_failed", "policy_violation")


def make_traces(n_conv: int, tag: str, turns: int = 2, agent: str = "refunds", seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = [{
        "trace_id": f"{tag}-{c}-{t}", "conversation_id": f"{tag}-{c}", "turn_index": t,
        "timestamp": datetime(2026, 11, 3, tzinfo=timezone.utc) + timedelta(minutes=c * 10 + t),
        "agent_id": agent, "user_id": f"{tag}-u{c}", "thumbs": None, "escalated": False,
        "user_rewrote": False, "user_message": " ".join(rng.choices(VOCAB, k=12)),
        "agent_response": " ".join(rng.choices(VOCAB, k=15)),
    } for c in range(n_conv) for t in range(turns)]
    return pl.DataFrame(rows)


def make_gold(trace_ids: list[str], verdicts: list[str], cats: list[str | None],
              rubric: str = "v1", resolution: str = "unanimous") -> pl.DataFrame:
    return pl.DataFrame({
        "trace_id": trace_ids, "rubric_version": rubric, "verdict": verdicts,
        "failure_category": cats, "resolution": resolution, "n_annotators": 2, "n_agreeing": 2,
    }, schema_overrides={"failure_category": pl.String})


def mixed_gold(traces: pl.DataFrame, every: int = 1) -> pl.DataFrame:
    ids = traces["trace_id"].to_list()[::every]
    verdicts = ["pass" if i % 3 == 0 else "fail" for i in range(len(ids))]
    cats = [None if v == "pass" else CATS[i % len(CATS)] for i, v in enumerate(verdicts)]
    return make_gold(ids, verdicts, cats)


def snapshot(prev, traces, gold, week, **config):
    cands = candidate_cases(gold, traces, None, week)
    return build_snapshot(prev, cands, "refunds", week, EvalSetConfig(**config))


def test_stable_split_matches_documented_hash_and_shares():
    ids = [f"conv-{i}" for i in range(5000)]
    split = pl.DataFrame({"c": ids}).select(stable_split(pl.col("c")))[:, 0].to_list()
    expected = ["test" if int(hashlib.sha256((SPLIT_SALT + c).encode()).hexdigest()[:8], 16) / 2**32 < 0.8
                else "dev" for c in ids]
    assert split == expected  # the documented function, so stable across library versions
    assert 0.78 < split.count("test") / len(ids) < 0.82
    shuffled = pl.DataFrame({"c": ids[::-1]}).select(stable_split(pl.col("c")))[:, 0].to_list()
    assert shuffled == expected[::-1]


def test_conversation_never_straddles_splits_even_if_share_changes():
    traces = make_traces(60, "a", turns=3)
    first = traces.filter(pl.col("turn_index") == 0)
    s1, _ = snapshot(None, traces, mixed_gold(first), W1, initial_target=200)
    # Week 2 labels the later turns; a changed share must not move a known conversation.
    s2, _ = snapshot(s1, traces, mixed_gold(traces), W2, initial_target=200, growth_per_week=200,
                     test_share=0.0)
    assert s2.height > s1.height
    assert s2.group_by("conversation_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert s2.filter(pl.col("split") == "test").height > 0


def test_grow_only_over_three_weeks_with_fixed_canary():
    traces = make_traces(90, "g")
    gold = mixed_gold(traces)
    ids = gold["trace_id"].to_list()
    cfg = dict(initial_target=20, growth_per_week=15, canary_size=8)
    s1, r1 = snapshot(None, traces, gold.filter(pl.col("trace_id").is_in(ids[:40])), W1, **cfg)
    s2, _ = snapshot(s1, traces, gold.filter(pl.col("trace_id").is_in(ids[:120])), W2, **cfg)
    s3, _ = snapshot(s2, traces, gold, W3, **cfg)
    assert (s1.height, s2.height, s3.height) == (20, 35, 50)
    assert r1["left_out_by_reason"]["over_budget"] == 20
    for old, new in ((s1, s2), (s2, s3)):
        kept = old.join(new, on="case_id", suffix="_new")
        assert kept.height == old.height  # nothing removed
        assert (kept["split"] == kept["split_new"]).all() and (kept["canary"] == kept["canary_new"]).all()
        assert (kept["first_seen_week"] == kept["first_seen_week_new"]).all()
    canary = [set(s.filter("canary")["case_id"]) for s in (s1, s2, s3)]
    assert len(canary[0]) == 8 and canary[0] == canary[1] == canary[2]
    assert s1.filter("canary")["split"].unique().to_list() == ["test"]
    assert s3["snapshot_id"].unique().to_list() == [f"refunds@{W3}"]


def test_same_inputs_same_hash_and_tampering_is_caught():
    traces = make_traces(30, "h")
    gold = mixed_gold(traces)
    s1, _ = snapshot(None, traces, gold, W1)
    again, _ = snapshot(None, traces.reverse(), gold.reverse(), W1)
    m = manifest(s1, CREATED)
    assert m["content_hash"] == content_hash(again) == content_hash(again.reverse())
    flip = pl.when(pl.col("verdict") == "pass").then(pl.lit("fail")).otherwise(pl.lit("pass"))
    tampered = s1.with_columns(pl.when(pl.col("case_id") == s1["case_id"][0]).then(flip)
                               .otherwise("verdict").alias("verdict"))
    assert content_hash(tampered) != m["content_hash"]
    assert m["n_cases"] == s1.height and m["snapshot_id"] == f"refunds@{W1}"
    assert sum(c["n_cases"] for c in m["counts_by_split"]) == s1.height


def test_near_duplicates_from_one_loud_user_collapse():
    loud = pl.DataFrame([{
        "trace_id": f"loud-{i}", "conversation_id": f"loud-c{i}", "turn_index": 0,
        "timestamp": datetime(2026, 11, 3, tzinfo=timezone.utc), "agent_id": "refunds",
        "user_id": "loud", "thumbs": "down", "escalated": False, "user_rewrote": False,
        "user_message": f"{'WHERE' if i % 2 else 'where'} is my refund for order #{1000 + i}??? "
                        f"this is {'ridiculous' if i % 3 else 'ridiculous!!'}",
        "agent_response": "I cannot help with that."} for i in range(20)])
    others = make_traces(10, "o", turns=1)
    traces = pl.concat([loud, others], how="diagonal_relaxed")
    gold = make_gold(traces["trace_id"].to_list(), ["fail"] * traces.height, ["could_not_answer"] * traces.height)
    snap, report = snapshot(None, traces, gold, W1, max_new_per_user=None)
    assert 1 <= snap.filter(pl.col("trace_id").str.starts_with("loud")).height <= 2
    assert snap.filter(pl.col("trace_id").str.starts_with("o-")).height == 10
    assert report["left_out_by_reason"]["near_duplicate"] >= 18
    dups = report["left_out"].filter(pl.col("reason") == "near_duplicate")
    assert dups["duplicate_of"].is_in(snap["case_id"].implode()).all()


def test_stratification_keeps_rare_categories_and_some_passes():
    traces = make_traces(150, "s", turns=1)
    ids = traces["trace_id"].to_list()
    verdicts = ["fail"] * 100 + ["fail"] * 3 + ["pass"] * 47
    cats = ["could_not_answer"] * 100 + ["policy_violation"] * 3 + [None] * 47
    snap, report = snapshot(None, traces, make_gold(ids, verdicts, cats), W1, initial_target=20)
    counts = dict(snap.group_by(pl.coalesce("failure_category", "verdict")).len().iter_rows())
    assert counts["policy_violation"] == 3 and counts["pass"] >= 5 and snap.height == 20
    assert report["added_by_stratum"]["policy_violation"] == 3


def test_relabel_shows_in_next_snapshot_and_diff_only():
    traces = make_traces(10, "r", turns=1)
    ids = traces["trace_id"].to_list()
    gold1 = make_gold(ids, ["fail"] * 10, ["tool_failed"] * 10)
    unresolved = make_gold(["r-9-0"], [None], [None], resolution="unresolved")
    gold1 = pl.concat([gold1.filter(pl.col("trace_id") != "r-9-0"), unresolved])
    s1, r1 = snapshot(None, traces, gold1, W1)
    assert r1["left_out_by_reason"] == {"unresolved_label": 1}
    s1_before = s1.clone()
    corrected = gold1.with_columns(
        pl.when(pl.col("trace_id") == "r-0-0").then(pl.lit("pass")).otherwise("verdict").alias("verdict"),
        pl.when(pl.col("trace_id") == "r-0-0").then(None).otherwise("failure_category").alias("failure_category"))
    v2 = make_gold(["r-1-0"], ["fail"], ["wrong_information"], rubric="v2")
    s2, r2 = snapshot(s1, traces, pl.concat([corrected, v2]), W2)
    assert s1.equals(s1_before)
    assert r2["n_relabeled"] == 2 and r2["n_added"] == 0
    diff = diff_snapshots(s1, s2)
    assert diff["change"].to_list() == ["relabeled", "relabeled"]
    by_trace = {r["trace_id"]: r for r in diff.iter_rows(named=True)}
    assert by_trace["r-0-0"]["old_verdict"] == "fail" and by_trace["r-0-0"]["new_verdict"] == "pass"
    assert by_trace["r-1-0"]["new_rubric_version"] == "v2"
    assert set(s1["case_id"]) == set(s2["case_id"])  # same cases, new labels
    added = diff_snapshots(s1.head(5), s1)
    assert added["change"].unique().to_list() == ["added"] and added.height == s1.height - 5


def test_export_is_atomic_and_refuses_a_different_hash(tmp_path):
    traces = make_traces(12, "e", turns=1)
    snap, _ = snapshot(None, traces, mixed_gold(traces), W1)
    m = manifest(snap, CREATED)
    folder = export_snapshot(snap, m, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["cases.jsonl", "cases.parquet", "manifest.json"]
    assert hashlib.sha256((folder / "cases.jsonl").read_bytes()).hexdigest() == m["content_hash"]
    assert export_snapshot(snap, m, tmp_path) == folder  # same content: a no-op
    changed = snap.with_columns(pl.lit("pass").alias("verdict"))
    with pytest.raises(ExportConflictError, match="never overwritten"):
        export_snapshot(changed, manifest(changed, CREATED), tmp_path)
    with pytest.raises(ValueError, match="manifest says"):
        export_snapshot(changed, m, tmp_path)
    assert not any((tmp_path / ".staging").iterdir())


WRITER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS eval_set_snapshots (x BIGINT)")
con.execute("BEGIN TRANSACTION")
con.execute("INSERT INTO eval_set_snapshots SELECT range FROM range(1000)")
print("writing", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
"""


def test_analyst_db_reads_views_while_the_warehouse_is_written(tmp_path):
    traces = make_traces(12, "q", turns=1)
    snap, _ = snapshot(None, traces, mixed_gold(traces), W1)
    export_snapshot(snap, manifest(snap, CREATED), tmp_path)
    publish_table(pl.DataFrame({"week": [W1], "failure_rate": [0.2]}), tmp_path, "quality_estimates", str(W1))
    db = write_analyst_db(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "warehouse.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        reader = duckdb.connect(str(db), read_only=True)
        assert reader.sql("SELECT count(*) FROM eval_set_snapshots").fetchone()[0] == snap.height
        # A second snapshot and a re-written views file while the reader stays open.
        snap2, _ = snapshot(snap, traces, mixed_gold(traces), W2)
        export_snapshot(snap2, manifest(snap2, CREATED), tmp_path)
        write_analyst_db(tmp_path)
        assert reader.sql("SELECT count(DISTINCT week) FROM eval_set_snapshots").fetchone()[0] == 2
        reader.close()
        fresh = duckdb.connect(str(db), read_only=True)
        row = fresh.sql("SELECT count(*), min(content_hash) IS NOT NULL FROM eval_set_manifests").fetchone()
        assert row == (2, True)
        assert fresh.sql("SELECT failure_rate FROM quality_estimates").fetchone()[0] == 0.2
        by_week = fresh.execute(EXAMPLE_QUERIES["pass_rate_by_week"], {"agent_id": "refunds"}).fetchall()
        assert [w for w, *_ in by_week] == [W1, W2]
        added = fresh.execute(EXAMPLE_QUERIES["added_this_week_by_category"],
                              {"agent_id": "refunds", "week": str(W1)}).fetchall()
        assert sum(n for _, n in added) == snap.height
        diff = fresh.execute(EXAMPLE_QUERIES["snapshot_diff"],
                             {"old": f"refunds@{W1}", "new": f"refunds@{W2}"}).pl()
        assert diff.height == diff_snapshots(snap, snap2).height
        fresh.close()
    finally:
        writer.communicate("\n", timeout=20)
    assert writer.returncode == 0


def test_dpo_pairs_come_from_dev_only_and_never_leak():
    traces = make_traces(80, "d", turns=3).with_columns(
        (pl.col("turn_index") == 1).alias("user_rewrote"),
        pl.when(pl.col("turn_index") == 2).then(pl.lit("up")).alias("thumbs"))
    middle = traces.filter(pl.col("turn_index") == 1)["trace_id"].to_list()
    gold = make_gold(middle, ["fail"] * len(middle), ["could_not_answer"] * len(middle))
    snap, _ = snapshot(None, traces, gold, W1, initial_target=100)
    pairs = dpo_pairs(snap, traces)
    n_dev = snap.filter(pl.col("split") == "dev").height
    assert 0 < pairs.height == n_dev
    assert check_no_heldout_leak(pairs, snap) == []
    assert pairs["pair_source"].unique().to_list() == ["user_rewrite"]
    assert pairs["chosen_evidence"].unique().to_list() == ["implicit_thumbs_up"]
    one = pairs.row(0, named=True)
    assert [m["role"] for m in one["prompt"]] == ["user", "assistant", "user"]
    by_id = {r["trace_id"]: r for r in traces.iter_rows(named=True)}
    assert one["chosen"] == [{"role": "assistant", "content": by_id[one["chosen_trace_id"]]["agent_response"]}]
    assert one["rejected"][0]["content"] == by_id[one["trace_id"]]["agent_response"]
    # A pair forged from a held-out conversation is reported.
    test_case = snap.filter(pl.col("split") == "test").head(1)
    forged = pl.concat([pairs.select("case_id", "conversation_id"),
                        test_case.select("case_id", "conversation_id")])
    assert len(check_no_heldout_leak(forged, snap)) == 1
    assert dpo_pairs(snap, traces, implicit_pass="none").height == 0


def test_per_user_cap_and_labels_as_of():
    traces = make_traces(10, "p", turns=1).with_columns(pl.lit("same-user").alias("user_id"))
    gold = make_gold(traces["trace_id"].to_list(), ["fail"] * 10, ["other"] * 10)
    snap, report = snapshot(None, traces, gold, W1, max_new_per_user=3)
    assert snap.height == 3 and report["left_out_by_reason"] == {"per_user_cap": 7}
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    history = pl.DataFrame({
        "label_id": ["a", "b"], "source": "annotation", "trace_id": "t", "annotator_id": "ann",
        "rubric_version": "v1", "verdict": ["fail", "pass"], "labeled_at": [t0, t0 + timedelta(days=9)],
        "imported_at": [t0, t0 + timedelta(days=10)], "source_file": "f", "source_line": [1, 2],
        "is_current": [False, True], "superseded_by": ["b", None]})
    then = labels_as_of(history, t0 + timedelta(days=7))
    assert then.select("label_id", "is_current").rows() == [("a", True)]


def test_escalations_fill_in_where_no_annotator_labeled():
    traces = make_traces(6, "x", turns=1).with_columns(
        pl.lit(True).alias("escalated"), pl.lit("tool_failed").alias("escalation_reason"))
    esc = escalation_labels(traces, "v1")
    gold = make_gold(["x-0-0"], ["pass"], [None])
    cands = candidate_cases(gold, traces, esc, W1)
    by_trace = dict(cands.select("trace_id", "source").iter_rows())
    assert by_trace["x-0-0"] == "annotation" and by_trace["x-5-0"] == "escalation"
    assert cands.filter(pl.col("source") == "escalation")["failure_category"].unique().to_list() == ["tool_failed"]


def test_analyst_db_is_left_alone_while_its_views_are_the_same(tmp_path):
    traces = make_traces(12, "v", turns=1)
    snap, _ = snapshot(None, traces, mixed_gold(traces), W1)
    export_snapshot(snap, manifest(snap, CREATED), tmp_path)
    db = write_analyst_db(tmp_path)
    before = db.stat()
    snap2, _ = snapshot(snap, traces, mixed_gold(traces), W2)
    export_snapshot(snap2, manifest(snap2, CREATED), tmp_path)
    assert write_analyst_db(tmp_path) == db and db.stat().st_ino == before.st_ino  # new week: same views
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("SELECT count(DISTINCT week) FROM eval_set_snapshots").fetchone()[0] == 2
    publish_table(pl.DataFrame({"week": [W1], "failure_rate": [0.2]}), tmp_path, "quality_estimates", str(W1))
    write_analyst_db(tmp_path)
    assert db.stat().st_ino != before.st_ino  # a new table folder: rewritten
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("SELECT failure_rate FROM quality_estimates").fetchone()[0] == 0.2
