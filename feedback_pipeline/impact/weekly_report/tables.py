"""The report's HTML tables: latest estimates, the labels next week needs, one change's
metrics, recent loop health;
and which changes the report shows, in which order.

Text only (no drawing: `figures.py`); cell formatting comes from `cells.py`.
"""

from datetime import date

import polars as pl

from feedback_pipeline.impact.drift import PSI_LARGE
from feedback_pipeline.impact.weekly_report.cells import (
    ESTIMATE_METHODS, fmt, html_table, is_rate, metric_label, upto,
)

LOOP_TABLE_WEEKS = 8
LOOP_NOTE = ("<p>The held-out pass rate comes from <b>replay</b> (the week's live agent version re-answered "
             "the held-out cases, graded by the judge) when an agent endpoint is configured, else from the "
             "<b>logged answers</b>' gold labels; CIs are clustered by conversation. "
             "Red crosses mark flags: <b>pass_rate_stalled</b> (by replay: the change against 4 weeks earlier is "
             "not above zero at 95 %; from logged answers: no new high for several weeks, 4 by default), <b>eval_set_stalled</b> (the set did not grow this week), "
             "<b>input_drift</b> (intent or channel mix PSI vs the previous week "
             f"above the threshold, {PSI_LARGE} by default; dashed line).</p>")


def estimates_table(est: pl.DataFrame) -> str:
    """Each agent's latest failure rate under each ESTIMATE_METHODS method, with its CI."""
    rows = est.filter(pl.col("metric") == "failure_rate")
    if rows.is_empty():
        return html_table([])
    last = rows.filter(pl.col("week") == pl.col("week").max().over("agent_id"))
    out = []
    for agent in sorted(last["agent_id"].unique().to_list()):
        row = {"agent": agent}
        for method, (label, _) in ESTIMATE_METHODS.items():
            r = last.filter((pl.col("agent_id") == agent) & (pl.col("method") == method))
            if r.height:
                row["week"] = str(r["week"][0])
                row[label] = (f"{fmt(r['estimate'][0], 'pct')} [{fmt(r['ci_low'][0], 'pct')}, "
                              f"{fmt(r['ci_high'][0], 'pct')}]") if r["estimate"][0] is not None else "n/a"
                if "n_labeled" in r.columns and method == "hajek":
                    row["labels"] = fmt(r["n_labeled"][0])
        out.append({k: row.get(k, "") for k in ["agent", "week", *[v[0] for v in ESTIMATE_METHODS.values()],
                                                "labels"]})
    return html_table(out)


def forest_table(rows: pl.DataFrame) -> str:
    """One change's metrics: before, after, effect, CI, p, BH-adjusted p, n, MDE, notes."""
    out = []
    for r in rows.to_dicts():
        rate = is_rate(r["metric"])
        kind = "pp" if rate else "num"
        ci = f"[{fmt(r['ci_low'], kind)}, {fmt(r['ci_high'], kind)}]" if r["ci_low"] is not None else ""
        out.append({"metric": metric_label(r), "before": fmt(r.get("mean_before"), "pct" if rate else "num"),
                    "after": fmt(r.get("mean_after"), "pct" if rate else "num"),
                    "effect": fmt(r["effect"], kind), "95 % CI": ci, "p": fmt(r["p_value"], "p"),
                    "p (BH)": fmt(r["p_adjusted"], "p"), "n before": fmt(r.get("n_before")),
                    "n after": fmt(r.get("n_after")), "MDE": fmt(r.get("mde"), "pp_size" if rate else "num"),
                    "notes": r.get("notes") or ""})
    return html_table(out)


def change_order(impact: pl.DataFrame, releases: pl.DataFrame, week: date) -> list[tuple[str, dict]]:
    """(change_id, release row or {}) for every change up to the week, newest first."""
    info: dict[str, dict] = {}
    if "change_id" in releases.columns:
        info = {r["change_id"]: r for r in upto(releases, "change_week", week).to_dicts()}
    ids = set(impact["change_id"].unique().to_list()) if "change_id" in impact.columns else set()
    if "change_week" in releases.columns:
        future = set(releases.filter(pl.col("change_week").cast(pl.Date) > week)["change_id"].to_list())
        ids -= future
    ids |= set(info)
    return sorted(((c, info.get(c, {})) for c in ids),
                  key=lambda t: (str(t[1].get("change_week") or ""), t[0]), reverse=True)


def _change(r: dict) -> str:
    """The month-over-month change of the pass rate with its CI, in points."""
    if r.get("pass_rate_mom_change") is None:
        return ""
    return (f"{fmt(r['pass_rate_mom_change'], 'pp')} [{fmt(r.get('pass_rate_mom_ci_low'), 'pp')}, "
            f"{fmt(r.get('pass_rate_mom_ci_high'), 'pp')}]")


PLANNING_NOTE = ("<p>Predicted from this week's strata and the queue's design (no draws): the labels an agent's "
                 "queue needs for a 95 % interval of ±3 points on its failure rate, and of ±1 point on its "
                 "largest failure category. The queue's budget is set per agent-week "
                 "(<code>labels_per_agent_week</code>).</p>")


def planning_table(planning: pl.DataFrame) -> str:
    """Per agent: labels for ±3 points on the failure rate and ±1 point on the largest category."""
    rows = [{"agent": r["agent_id"], "labels for ±3 pts failure rate": fmt(r["labels_for_failure_rate"]),
             "largest category": r.get("largest_category") or "",
             "labels for ±1 pt on it": fmt(r.get("labels_for_largest_category"))}
            for r in planning.sort("agent_id").to_dicts()]
    return PLANNING_NOTE + html_table(rows)


def loop_table(loop: pl.DataFrame) -> str:
    """Each agent's last LOOP_TABLE_WEEKS weeks of loop health; flagged weeks in red."""
    recent = loop.sort("week").group_by("agent_id", maintain_order=True).tail(LOOP_TABLE_WEEKS)
    out = []
    for r in recent.sort("agent_id", "week").to_dicts():
        ci = f"[{fmt(r['pass_rate_ci_low'], 'pct')}, {fmt(r['pass_rate_ci_high'], 'pct')}]" \
            if r.get("pass_rate") is not None else ""
        out.append({"agent": r["agent_id"], "week": str(r["week"]),
                    "pass rate": f"{fmt(r.get('pass_rate'), 'pct')} {ci}".strip(),
                    "source": (r.get("pass_rate_source") or "").replace("_", " "),
                    "vs 4 weeks ago": _change(r),
                    "cases": fmt(r.get("eval_set_size")), "coverage": fmt(r.get("category_coverage"), "pct"),
                    "labels": fmt(r.get("labels_imported")), "κ": fmt(r.get("judge_kappa")),
                    "rated": fmt(r.get("share_rated"), "pct"), "PSI intent": fmt(r.get("intent_psi")),
                    "PSI channel": fmt(r.get("channel_psi")), "flags": r.get("flags") or ""})
    return html_table(out, flag_column="flags")
