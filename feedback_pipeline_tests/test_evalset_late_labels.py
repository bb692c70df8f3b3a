"""Issue #19, the eval-set side: a label whose trace lies outside the week being built is
no candidate of that week, and never crashes `eval_set_snapshots`.

Through Dagster, on a temporary home with a real DuckDB warehouse: landing files for three
closed weeks (2026-11-02, -09, -16), their queues, labels, then the eval sets of the
three weeks with every check passing.
"""

import random
import shutil
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.weeks import week_end
from feedback_pipeline_tests.conftest import good_record, run_resources, write_jsonl

WEEKS = ("2026-11-02", "2026-11-09", "2026-11-16")
BACKFILLED_AT = "2026-11-10T10:00:00Z"  # the issue's wrong date: inside week 2026-11-09
LATE_ENOUGH = "2026-11-22T12:00:00Z"  # after every trace, before week 2026-11-16 closes
CATEGORIES = ("could_not_answer", "wrong_information", "tone_wrong", "tool_failed")
VOCAB = ("refund order shoes parcel courier invoice warranty size colour return label address payment "
         "card voucher discount delay broken missing wrong late store exchange jacket dress boots").split()
BEFORE_LABELS = dg.AssetSelection.groups("ingest", "scoring", "sampling")
LABELS = dg.AssetSelection.assets("human_labels")
EVALSET = dg.AssetSelection.groups("evalset")


def _run(resources: dict, selection, partition: str | None = None,
         checks: bool = True) -> dg.ExecuteInProcessResult:
    """Materialize; the run succeeds and (unless `checks` is off) every check passes."""
    result = dg.materialize(ASSETS + ASSET_CHECKS, selection=selection, partition_key=partition,
                            resources=resources, raise_on_error=False)
    failures = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    if not checks:
        return result
    failed_checks = [(e.asset_key.to_user_string(), e.check_name)
                     for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed_checks == []
    return result


def _landing_records(week: str, rng: random.Random) -> list[dict]:
    """Two agents, eight two-turn conversations each, spread over the week's Monday to Sunday."""
    monday = datetime.combine(date.fromisoformat(week), datetime.min.time(), timezone.utc)
    records = []
    for agent in ("refunds", "shipping"):
        for c in range(8):
            start = monday + timedelta(hours=3 + c * 20)
            for turn in range(2):
                trace_id = f"{agent}-{week}-{c}-{turn}"
                records.append(good_record(
                    trace_id, conversation_id=f"{agent}-{week}-{c}", turn_index=turn, agent_id=agent,
                    user_id=f"u-{agent}-{week}-{c}",
                    timestamp=(start + timedelta(minutes=turn)).isoformat().replace("+00:00", "Z"),
                    user_message=" ".join(rng.choices(VOCAB, k=14)),
                    agent_response=" ".join(rng.choices(VOCAB, k=16))))
    return records


@pytest.fixture(scope="module")
def queued(tmp_path_factory) -> FeedbackHome:
    """A home with three weeks landed, scored and queued (copied by each test)."""
    home = FeedbackHome(path=str(tmp_path_factory.mktemp("late_labels") / "home"))
    rng = random.Random(19)
    for week in WEEKS:
        write_jsonl(home.landing / f"{week}.jsonl", _landing_records(week, rng))
    resources = run_resources(home)
    for week in WEEKS:
        _run(resources, BEFORE_LABELS, week, checks=False)  # no judge endpoint: its check warns
    return home


def _copy(queued: FeedbackHome, tmp_path) -> tuple[FeedbackHome, dict]:
    target = tmp_path / "home"
    shutil.copytree(queued.root, target)
    home = FeedbackHome(path=str(target))
    return home, run_resources(home)


def _write_label_file(home: FeedbackHome, labeled_at: str) -> pl.DataFrame:
    """One annotator labels every queued trace (pass or a failure category) at `labeled_at`."""
    with home.warehouse() as con:
        queue = con.execute("SELECT trace_id FROM annotation_queue ORDER BY trace_id").pl()
    labels = queue.with_row_index("i").select(
        "trace_id", pl.lit("ann-1").alias("annotator_id"),
        pl.when(pl.col("i") % 3 == 0).then(pl.lit("pass")).otherwise(pl.lit("fail")).alias("verdict"),
        pl.when(pl.col("i") % 3 == 0).then(None)
        .otherwise(pl.lit(pl.Series(CATEGORIES)).get(pl.col("i") % len(CATEGORIES))).alias("failure_category"),
        pl.lit("v1").alias("rubric_version"), pl.lit(labeled_at).alias("labeled_at"))
    labels.write_csv(home.labels_inbox / "backfill.csv")
    return labels


def _snapshots(home: FeedbackHome) -> pl.DataFrame:
    with home.warehouse() as con:
        return con.execute("""
            SELECT s.week, s.agent_id, s.trace_id, t.timestamp
            FROM eval_set_snapshots s JOIN raw_traces t USING (trace_id)
        """).pl()


def _assert_cases_inside_their_week(snapshots: pl.DataFrame) -> None:
    late = snapshots.filter(pl.col("timestamp") >= pl.col("week").map_elements(
        week_end, return_dtype=pl.Datetime("us", "UTC")))
    assert late.is_empty(), late


def test_backfilled_label_file_of_the_issue_builds_every_week(queued, tmp_path):
    """The issue's scenario: one CSV labels every queued trace at 2026-11-10T10:00:00Z."""
    home, resources = _copy(queued, tmp_path)
    _write_label_file(home, BACKFILLED_AT)
    _run(resources, LABELS)
    for week in WEEKS:
        _run(resources, EVALSET, week)
    snapshots = _snapshots(home)
    _assert_cases_inside_their_week(snapshots)
    by_week = {w.isoformat(): set(f["trace_id"]) for (w,), f in snapshots.partition_by("week", as_dict=True).items()}
    # Labels dated 11-10 are unknown when week 02 closes: its traces are week 09's cases.
    assert set(by_week) == {"2026-11-09", "2026-11-16"}
    assert any(WEEKS[0] in t for t in by_week["2026-11-09"]) and by_week["2026-11-09"] <= by_week["2026-11-16"]
    rerun = _run(resources, EVALSET, WEEKS[1])  # and a re-run reproduces the stored hashes
    [check] = [e for e in rerun.get_asset_check_evaluations() if e.check_name == "snapshot_unchanged"]
    assert check.metadata["verified_existing"].value == 2


def test_labels_of_later_traces_are_no_candidates_of_an_earlier_week(queued, tmp_path):
    """Whatever the labels stage accepts: human_labels rows dated inside week 09 whose traces
    belong to week 16 (written straight into the warehouse, as an older import left them)
    are candidates of week 16 only."""
    home, resources = _copy(queued, tmp_path)
    labels = _write_label_file(home, LATE_ENOUGH)  # after every trace: all accepted
    _run(resources, LABELS)
    week16 = labels.filter(pl.col("trace_id").str.contains(WEEKS[2]))
    with home.warehouse() as con:
        accepted = con.execute("SELECT count(*) FROM human_labels").fetchone()[0]
        assert accepted == labels.height
        con.execute("UPDATE human_labels SET labeled_at = ?::TIMESTAMPTZ WHERE trace_id LIKE ?",
                    [BACKFILLED_AT, f"%{WEEKS[2]}%"])
    runs = {week: _run(resources, EVALSET, week) for week in WEEKS}
    [event] = [e for e in runs[WEEKS[1]].get_asset_materialization_events()
               if e.asset_key.to_user_string() == "eval_set_snapshots"]
    assert event.materialization.metadata["labels_outside_week"].value == week16.height  # said, not hidden
    snapshots = _snapshots(home)
    _assert_cases_inside_their_week(snapshots)
    by_week = {w: set(f["trace_id"]) for (w,), f in snapshots.partition_by("week", as_dict=True).items()}
    assert by_week.get(date(2026, 11, 2), set()) == set()  # its labels are dated 11-22: none known yet
    assert by_week.get(date(2026, 11, 9), set()) == set()  # only week-16 traces' labels known; not its candidates
    assert by_week[date(2026, 11, 16)] & set(week16["trace_id"])  # they are week 16's


def test_a_label_whose_trace_left_raw_traces_is_no_candidate(queued, tmp_path):
    """A trace removed from its landing file after it was labeled (the week re-ingested)."""
    home, resources = _copy(queued, tmp_path)
    _write_label_file(home, LATE_ENOUGH)
    _run(resources, LABELS)
    gone = "refunds-2026-11-16-0-1"
    path = home.landing / f"{WEEKS[2]}.jsonl"
    kept = [line for line in path.read_text().splitlines() if gone not in line]
    path.write_text("\n".join(kept) + "\n")
    _run(resources, dg.AssetSelection.groups("ingest"), WEEKS[2])
    with home.warehouse() as con:
        assert con.execute("SELECT count(*) FROM raw_traces WHERE trace_id = ?", [gone]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM human_labels WHERE trace_id = ?", [gone]).fetchone()[0] == 1
    _run(resources, EVALSET, WEEKS[2])
    snapshots = _snapshots(home)
    assert gone not in set(snapshots["trace_id"]) and snapshots.height > 0


# ---------------------------------------------------------------- the pure functions

def _traces(ids_and_times: list[tuple[str, datetime]]) -> pl.DataFrame:
    return pl.DataFrame([{
        "trace_id": t, "conversation_id": f"c-{t}", "turn_index": 0, "timestamp": ts, "agent_id": "refunds",
        "user_id": f"u-{t}", "user_message": f"question {t}", "agent_response": f"answer {t}"}
        for t, ts in ids_and_times])


def test_candidates_of_a_week_are_its_traces_and_earlier_ones_only():
    from feedback_pipeline.evalset.candidates import candidate_cases

    week = date(2026, 11, 9)
    traces = _traces([("early", datetime(2026, 11, 3, tzinfo=timezone.utc)),
                      ("inside", datetime(2026, 11, 15, 23, 59, tzinfo=timezone.utc)),
                      ("later", week_end(week))])  # the next week's first instant
    gold = pl.DataFrame({"trace_id": ["early", "inside", "later", "gone"], "rubric_version": "v1",
                         "verdict": ["fail", "pass", "fail", "pass"],
                         "failure_category": ["tool_failed", None, "tone_wrong", None],
                         "resolution": "unanimous"})
    cands = candidate_cases(gold, traces, None, week)
    assert cands["trace_id"].to_list() == ["early", "inside"]
    assert cands["agent_id"].null_count() == 0 and cands["left_out_reason"].null_count() == 2
    assert candidate_cases(gold, traces, None, date(2026, 11, 16))["trace_id"].to_list() == [
        "early", "inside", "later"]


def test_a_week_without_any_candidate_of_its_own_builds_nothing_and_no_agent_is_null():
    from feedback_pipeline.evalset.config import EvalSetConfig
    from feedback_pipeline.evalset.schemas import EvalSetCandidates
    from feedback_pipeline.evalset.week import build_week
    from feedback_pipeline.frames import conform

    stray = conform(pl.DataFrame({"trace_id": ["t"], "rubric_version": ["v1"], "verdict": ["pass"],
                                  "source": ["annotation"]}), EvalSetCandidates)  # agent_id null
    built = build_week(stray, pl.DataFrame(), {}, date(2026, 11, 9), EvalSetConfig())
    assert built.snapshots == [] and built.mismatched == [] and built.rows.is_empty()
