"""Annotator agreement (κ, α) against hand-computed cases; per-annotator bias; gold labels."""

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from feedback_pipeline.labels.adjudication import adjudication_list
from feedback_pipeline.labels.agreement import agreement_summary
from feedback_pipeline.labels.annotator_stats import annotator_stats
from feedback_pipeline.labels.gold import resolve_labels
from feedback_pipeline.label_studio import queue_to_label_studio_tasks

T0 = datetime(2024, 5, 13, 9, tzinfo=timezone.utc)


def _labels(rows, *, version="v1", source="annotation", **extra):
    """rows: (trace_id, annotator_id, "pass" | "fail:<category>")."""
    return pl.DataFrame({
        "trace_id": [r[0] for r in rows],
        "annotator_id": [r[1] for r in rows],
        "verdict": [r[2].split(":")[0] for r in rows],
        "failure_category": [r[2].split(":")[1] if ":" in r[2] else None for r in rows],
        "rubric_version": [version] * len(rows),
        "labeled_at": [T0 + timedelta(minutes=i) for i in range(len(rows))],
        "source": [source] * len(rows),
        "is_current": [True] * len(rows),
        **{k: [v] * len(rows) for k, v in extra.items()},
    })


def _two_raters(a: str, b: str, version="v1"):
    return _labels([(f"t{i}", "A", x) for i, x in enumerate(a)]
                   + [(f"t{i}", "B", x) for i, x in enumerate(b)], version=version)


# 10 items. A: P P P P P F F F F F ; B: P P P P F P F F F F  (P = pass, F = fail:other)
A10 = ["pass"] * 5 + ["fail:other"] * 5
B10 = ["pass"] * 4 + ["fail:other", "pass"] + ["fail:other"] * 4


def _metric(summary, metric, field="verdict"):
    return summary.filter((pl.col("metric") == metric) & (pl.col("field") == field)).row(0, named=True)


def test_cohens_kappa_hand_computed():
    # Table (A rows, B cols): PP=4, PF=1, FP=1, FF=4.  p_o = 8/10 = 0.8.
    # Marginals: A passes 5/10, B passes 5/10 → p_e = .5·.5 + .5·.5 = 0.5.
    # κ = (p_o − p_e) / (1 − p_e) = (0.8 − 0.5) / 0.5 = 0.6.
    kappa = _metric(agreement_summary(_two_raters(A10, B10)), "cohens_kappa")
    assert kappa["value"] == pytest.approx(0.6)
    assert kappa["percent_agreement"] == pytest.approx(0.8)
    assert (kappa["rater_a"], kappa["rater_b"], kappa["n_items"], kappa["n_raters"]) == ("A", "B", 10, 2)
    assert -1 <= kappa["ci_low"] < 0.6 < kappa["ci_high"] <= 1


def test_krippendorff_alpha_two_raters_hand_computed():
    # Coincidence matrix (nominal, each 2-value unit adds 1 to o[x,y] and o[y,x]):
    # o_PP = 8, o_FF = 8, o_PF = o_FP = 2; n_P = n_F = 10, n = 20.
    # D_o = (o_PF + o_FP) / n = 4/20 = 0.2;  D_e = 2·n_P·n_F / (n(n−1)) = 200/380.
    # α = 1 − D_o/D_e = 1 − 0.2·380/200 = 1 − 0.38 = 0.62.
    alpha = _metric(agreement_summary(_two_raters(A10, B10)), "krippendorff_alpha")
    assert alpha["value"] == pytest.approx(0.62)
    assert (alpha["n_items"], alpha["n_raters"], alpha["n_ratings"]) == (10, 2, 20)


def test_krippendorff_alpha_three_raters_hand_computed():
    # Units (raters X, Y, Z): u1 PPP, u2 FFF, u3 PPF, u4 FFP. Each unit has m = 3 values,
    # so each ordered pair within a unit adds 1/(m−1) = 1/2:
    # u1 → o_PP += 3; u2 → o_FF += 3; u3 → o_PP += 1, o_PF += 1, o_FP += 1; u4 → o_FF += 1, o_PF += 1, o_FP += 1.
    # o_PP = 4, o_FF = 4, o_PF = o_FP = 2; n_P = n_F = 6, n = 12.
    # D_o = 4/12 = 1/3;  D_e = 2·6·6/(12·11) = 6/11;  α = 1 − (1/3)/(6/11) = 1 − 11/18 = 7/18 ≈ 0.3889.
    p, f = "pass", "fail:other"
    units = {"u1": (p, p, p), "u2": (f, f, f), "u3": (p, p, f), "u4": (f, f, p)}
    rows = [(u, r, v) for u, vs in units.items() for r, v in zip("XYZ", vs)]
    summary = agreement_summary(_labels(rows))
    alpha = _metric(summary, "krippendorff_alpha")
    assert alpha["value"] == pytest.approx(7 / 18)
    # Pairwise agreement: 3 + 3 + 1 + 1 agreeing pairs out of 4·3 = 12.
    assert alpha["percent_agreement"] == pytest.approx(8 / 12)
    assert summary.filter(pl.col("metric") == "cohens_kappa").height == 6  # 3 pairs × 2 fields


def test_agreement_undefined_when_every_label_is_the_same():
    summary = agreement_summary(_two_raters(["pass"] * 4, ["pass"] * 4))
    for metric in ("cohens_kappa", "krippendorff_alpha"):
        row = _metric(summary, metric)
        assert row["value"] is None and row["percent_agreement"] == 1.0


def test_category_agreement_uses_fail_labels_only():
    rows = [("t1", "A", "fail:tool_failed"), ("t1", "B", "fail:tool_failed"),
            ("t2", "A", "fail:tone_wrong"), ("t2", "B", "fail:other"),
            ("t3", "A", "pass"), ("t3", "B", "fail:other")]  # t3: B's category has no partner
    row = _metric(agreement_summary(_labels(rows)), "cohens_kappa", field="failure_category")
    assert (row["n_items"], row["percent_agreement"]) == (2, 0.5)


def test_items_with_one_label_and_superseded_labels_are_ignored():
    extra = _labels([("t99", "A", "pass")])
    stale = _labels([("t0", "B", "fail:other")]).with_columns(pl.lit(False).alias("is_current"))
    escalation = _labels([("t0", "escalation", "fail:other")], source="escalation")
    summary = agreement_summary(pl.concat([_two_raters(A10, B10), extra, stale, escalation]))
    assert _metric(summary, "cohens_kappa")["value"] == pytest.approx(0.6)


def test_rubric_versions_and_weeks_are_never_mixed():
    v1 = _two_raters(A10, B10, "v1").with_columns(pl.lit(date(2024, 5, 6)).alias("week"))
    v2 = _two_raters(A10, A10, "v2").with_columns(pl.lit(date(2024, 5, 6)).alias("week"))
    wk2 = _two_raters(A10, A10, "v1").with_columns(pl.lit(date(2024, 5, 13)).alias("week"),
                                                   pl.col("trace_id") + "_w2")
    summary = agreement_summary(pl.concat([v1, v2, wk2]), week_col="week")
    kappas = summary.filter((pl.col("metric") == "cohens_kappa") & (pl.col("field") == "verdict"))
    got = {(r["rubric_version"], r["week"]): r["value"] for r in kappas.to_dicts()}
    assert got == {("v1", date(2024, 5, 6)): pytest.approx(0.6), ("v2", date(2024, 5, 6)): 1.0,
                   ("v1", date(2024, 5, 13)): 1.0}


def test_annotator_stats_spot_the_lenient_rater():
    # Truth: t0..t9 fail. A and B call all of them fail; L (lenient) passes t0..t5.
    rows = [(f"t{i}", r, "fail:other") for i in range(10) for r in "AB"]
    rows += [(f"t{i}", "L", "pass" if i < 6 else "fail:other") for i in range(10)]
    stats = {r["annotator_id"]: r for r in annotator_stats(_labels(rows)).to_dicts()}
    # L: the others' majority (A, B) is fail everywhere → L agrees on 4/10; pass rate 0.6 vs 0.0.
    assert stats["L"]["agreement_with_majority"] == pytest.approx(0.4)
    assert stats["L"]["pass_rate_gap"] == pytest.approx(0.6)
    # A: others are B (fail) and L (pass on t0..t5) → tie (excluded) on 6 items, fail on 4 → 4/4.
    assert stats["A"]["agreement_with_majority"] == 1.0
    assert stats["A"]["pass_rate_gap"] == pytest.approx(-0.3)  # 0 − (6 passes / 20 other labels)
    assert stats["A"]["n_shared"] == 10 and stats["L"]["pass_rate"] == pytest.approx(0.6)


def test_resolve_labels_rules():
    rows = [
        ("single", "A", "pass"),
        ("unanimous", "A", "fail:tool_failed"), ("unanimous", "B", "fail:tool_failed"),
        ("majority", "A", "pass"), ("majority", "B", "pass"), ("majority", "C", "fail:other"),
        ("split", "A", "pass"), ("split", "B", "fail:other"),
        ("category_split", "A", "fail:other"), ("category_split", "B", "fail:tone_wrong"),
        ("category_split", "C", "pass"),
        ("adjudicated", "A", "pass"), ("adjudicated", "B", "fail:other"),
    ]
    labels = pl.concat([
        _labels(rows),
        _labels([("adjudicated", "lead", "fail:policy_violation")], source="adjudication"),
        _labels([("escalated_only", "escalation", "fail:could_not_answer")], source="escalation"),
        # A's superseded label must not count as a vote
        _labels([("unanimous", "A", "pass")]).with_columns(pl.lit(False).alias("is_current")),
    ])
    gold = {r["trace_id"]: r for r in resolve_labels(labels).to_dicts()}
    assert "escalated_only" not in gold  # escalations are kept apart by default
    expect = {
        "single": ("pass", None, "single", 1, 1),
        "unanimous": ("fail", "tool_failed", "unanimous", 2, 2),
        "majority": ("pass", None, "majority", 3, 2),
        "split": (None, None, "unresolved", 2, None),
        "category_split": (None, None, "unresolved", 3, None),
        "adjudicated": ("fail", "policy_violation", "adjudicated", 2, None),
    }
    got = {t: (g["verdict"], g["failure_category"], g["resolution"], g["n_annotators"], g["n_agreeing"])
           for t, g in gold.items()}
    assert got == expect
    with_esc = resolve_labels(labels, include_escalation=True)
    esc = with_esc.filter(pl.col("trace_id") == "escalated_only").row(0, named=True)
    assert (esc["verdict"], esc["failure_category"], esc["resolution"]) == ("fail", "could_not_answer", "escalation")


def test_adjudication_list_and_export():
    rows = [("agree", "A", "pass"), ("agree", "B", "pass"),
            ("verdict", "A", "pass"), ("verdict", "B", "fail:other"),
            ("category", "A", "fail:other"), ("category", "B", "fail:tone_wrong"), ("category", "C", "fail:other"),
            ("done", "A", "pass"), ("done", "B", "fail:other")]
    labels = pl.concat([_labels(rows), _labels([("done", "lead", "pass")], source="adjudication"),
                        _labels([("verdict", "A", "pass"), ("verdict", "B", "pass")], version="v2")])
    out = adjudication_list(labels)
    assert out.select("trace_id", "rubric_version", "disagreement_on", "resolution").rows() == [
        ("verdict", "v1", "verdict", "unresolved"),  # unresolved first
        ("category", "v1", "failure_category", "majority"),
    ]
    assert out["labels_given"][0] == "A=pass; B=fail:other"
    queue = pl.DataFrame({
        "week": [date(2024, 5, 6)] * 2, "agent_id": ["billing"] * 2, "trace_id": ["verdict", "category"],
        "stratum": ["unrated"] * 2, "inclusion_prob": [0.1] * 2, "queue_position": [1, 2],
        "user_message": ["q1", "q2"], "agent_response": ["a1", "a2"], "context": ["", ""],
    })
    tasks = queue_to_label_studio_tasks(adjudication_list(labels, queue), "v1", label_source="adjudication")
    assert [t["data"]["trace_id"] for t in tasks] == ["verdict", "category"]
    assert {t["data"]["label_source"] for t in tasks} == {"adjudication"}
