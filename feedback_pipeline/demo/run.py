"""`make demo`: generate the demo world, then run every stage on it through Dagster.

A local OpenAI-compatible fake judge (loopback, its own process) answers from the
world's hidden truth, so the real `openai` client path runs without a key.
"""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from datetime import date

import dagster as dg
import duckdb
import polars as pl

from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.runs import materialize_unpartitioned, materialize_weeks
from feedback_pipeline.scoring.judge import JudgeResource

DEMO_WEEKS = 8
# Escalated and thumbs-down turns (~6 %) are always judged; the rest is sampled to
# this budget so the demo finishes in about a minute (the fake judge is real HTTP).
DEMO_JUDGE_CALLS_PER_WEEK = 2_000
# 300 labels per agent-week (the default is 150): at 150 a 5-point change in the
# failure rate is found only ~63 % of the time (benchmarks/impact_power.py), ~80 % at 300.
DEMO_LABELS_PER_AGENT_WEEK = 300
BEFORE_LABELS = dg.AssetSelection.groups("ingest", "scoring", "sampling")


def start_fake_judge(truth: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    """The fake judge in its own process (so it does not share our GIL); returns its base URL."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedback_pipeline.demo.fake_openai", "--truth", str(truth), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/models", timeout=0.5)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the demo's fake judge did not start")


def demo_weeks() -> list[str]:
    from datetime import timedelta

    return [(DEMO_FIRST_WEEK + timedelta(days=7 * i)).isoformat() for i in range(DEMO_WEEKS)]


def run_demo(seed: int = 7, turns_per_week: int = 20_000) -> None:
    home = FeedbackHome()
    started = time.perf_counter()
    world = generate_world(home.root, seed=seed, weeks=DEMO_WEEKS, turns_per_week=turns_per_week)
    print(f"demo world: {world['turns_written']:,} turns, {sum(world['malformed_written'].values())} "
          f"malformed records, {world['duplicates_written']} duplicates -> {home.landing}")
    truth_path = home.root / "demo_truth" / "turn_truth.parquet"
    proc, url = start_fake_judge(truth_path)
    try:
        judge = JudgeResource(base_url=url, model="fake-judge-1",
                              max_judge_calls_per_week=DEMO_JUDGE_CALLS_PER_WEEK)
        resources = {"home": home, "judge": judge}
        for week in demo_weeks():
            t0 = time.perf_counter()
            materialize_weeks([week], resources=resources, selection=BEFORE_LABELS, run_config={
                "ops": {"annotation_queue": {"config": {"labels_per_agent_week": DEMO_LABELS_PER_AGENT_WEEK}}}})
            print(f"week {week}: ingest, scoring, queue in {time.perf_counter() - t0:.1f} s")
        # Simulated annotators label each week's exported queue into the inbox ...
        truth = pl.read_parquet(truth_path)
        with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
            queues = con.execute("SELECT * FROM annotation_queue").pl()
        for week in demo_weeks():
            write_demo_labels(queues.filter(pl.col("week") == date.fromisoformat(week)), truth,
                              home.labels_inbox, week, seed)
        # ... then the labels are imported and every estimate refreshed.
        materialize_unpartitioned(resources, selection=dg.AssetSelection.groups("labels")
                                  - dg.AssetSelection.assets("quality_estimates"))
        materialize_weeks(demo_weeks(), resources=resources,
                          selection=dg.AssetSelection.assets("quality_estimates")
                          | dg.AssetSelection.groups("evalset"))
        materialize_unpartitioned(resources, selection=dg.AssetSelection.groups("impact")
                                  - dg.AssetSelection.assets("weekly_report"))
        materialize_weeks(demo_weeks()[-1:], resources=resources,
                          selection=dg.AssetSelection.assets("weekly_report"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print_summary(home, truth)
    print(f"done in {time.perf_counter() - started:.0f} s")


def print_impact(home: FeedbackHome) -> None:
    """Each detected change: the human-labeled failure rate effect, thumbs and shape, proxy flag."""
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        rows = con.execute("""
            SELECT change_id, metric, effect, ci_low, ci_high, p_adjusted, proxy_gaming
            FROM impact_metrics
            WHERE (metric = 'failure_rate' AND method = 'hajek')
               OR (metric IN ('judge_failure_rate', 'thumbs_down_rate', 'response_chars', 'refusal_rate'))
            ORDER BY change_id, metric
        """).pl()
    print("impact of each detected change (effect = after - before, 95 % CI, BH-adjusted p):")
    for (change,), group in rows.group_by("change_id", maintain_order=True):
        flag = "  ** PROXY GAMING **" if group["proxy_gaming"].any() else ""
        print(f"  {change}{flag}")
        for r in group.iter_rows(named=True):
            if r["effect"] is None:
                continue
            print(f"    {r['metric']:<20} {r['effect']:+9.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                  f"  p_adj={r['p_adjusted']:.3g}")


def print_summary(home: FeedbackHome, truth: pl.DataFrame) -> None:
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        loaded = con.execute("SELECT count(*) FROM raw_traces").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM ingest_quarantine").fetchone()[0]
        reasons = con.execute(
            "SELECT field, count(*) FROM ingest_quarantine GROUP BY 1 ORDER BY 2 DESC").fetchall()
        judged = con.execute(
            "SELECT count(*) FILTER (WHERE judge_verdict IS NOT NULL), count(*) FILTER (WHERE judge_error IS NOT NULL) "
            "FROM automated_scores").fetchone()
        queued = con.execute("SELECT count(*) FROM annotation_queue").fetchone()[0]
        labels = con.execute("SELECT source, count(*) FROM human_labels WHERE is_current GROUP BY 1 ORDER BY 1").fetchall()
        label_quarantine = con.execute("SELECT count(*) FROM label_quarantine").fetchone()[0]
        estimates = con.execute("""
            SELECT week, agent_id, method, estimate, ci_low, ci_high FROM quality_estimates
            WHERE metric = 'failure_rate' AND method IN ('hajek', 'ppi', 'naive_thumbs', 'naive_sample')
              AND week = (SELECT max(week) FROM quality_estimates)
        """).pl()
    true_rate = truth.group_by("agent_id", "week").agg((pl.col("true_verdict") == "fail").mean().alias("truth"))
    table = estimates.pivot(on="method", index=["week", "agent_id"], values="estimate").join(
        true_rate, on=["agent_id", "week"], how="left").sort("agent_id")
    print()
    print(f"rows loaded: {loaded:,} traces; quarantined: {quarantined:,} "
          f"({', '.join(f'{f}: {n}' for f, n in reasons)})")
    print(f"judge verdicts: {judged[0]:,} (errors: {judged[1]}); annotation queue: {queued:,} items")
    print(f"labels: {', '.join(f'{s}: {n}' for s, n in labels)}; label rows quarantined: {label_quarantine}")
    print("failure rate, last week: design-weighted (hajek), PPI, naive thumbs-down, naive sample vs the hidden truth")
    with pl.Config(tbl_rows=20, float_precision=3, tbl_hide_dataframe_shape=True):
        print(table)
    print_impact(home)
    print(f"warehouse: {home.warehouse_path}")
    print(f"queue exports: {home.exports / 'annotation_queue'}; eval sets: {home.exports / 'eval_sets'}")
    print(f"report: {home.exports / 'reports' / (demo_weeks()[-1] + '.html')}")
    print(f"analysts: duckdb -readonly {home.exports / 'analyst.duckdb'}")
    print("next: `make ui` and open http://127.0.0.1:3000 (runs, metadata and checks of this demo),")
    print(f"      or `duckdb -readonly {home.warehouse_path}` to query the tables")
