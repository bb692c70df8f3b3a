"""`make demo`: the demo world, week by week, through the same automation production runs.

The world's landing files are dropped into landing/ as each simulated week closes, and
the simulated annotators' label files into labels/inbox/ the Monday after; the
daemon's loop (sensors + automation conditions, `runs.AutomationTicker`) decides every
run, exactly as `dagster dev` would. A loopback OpenAI-compatible fake judge (its own
process) answers from the world's hidden truth, so the real `openai` client path runs
without a key. No stage order is written here.
"""

import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from feedback_pipeline.definitions import build_defs
from feedback_pipeline.demo.annotators import write_demo_labels
from feedback_pipeline.demo.fake_openai import start_server_process
from feedback_pipeline.demo.fake_agent import start_fake_agent
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.impact.agent import AgentReplayResource
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.runs import AutomationTicker, current_instance
from feedback_pipeline.scoring.judge import JudgeResource
from feedback_pipeline.weeks import week_end

DEMO_WEEKS = 8
# 10k turns a week (20k before) keep the demo's time down (README "Known limits"); its
# effects are measured on the human labels and the judge's verdicts, whose counts do not
# depend on it (the planted effects are found as at 20k: README "The demo world").
DEMO_TURNS_PER_WEEK = 10_000
# Escalated and thumbs-down turns (~6 %) are always judged; the rest is sampled to this
# budget (15 % of the turns): judge calls are most of a week's scoring time (real HTTP).
DEMO_JUDGE_CALLS_PER_WEEK = 1_500
# 300 labels per agent-week (the default is 150): at 150 a 5-point change in the
# failure rate is found only ~63 % of the time (benchmarks/impact_power.py), ~80 % at 300.
DEMO_LABELS_PER_AGENT_WEEK = 300
DEMO_CLOCK_SKEW_MINUTES = 7 * 24 * 60
WORLD_DIR = "demo_world"  # the generated world, before its files "arrive"
# The daemon's tick, in simulated time: files are read an hour after their week closes,
# and last week's label files (labeled Monday 09:00) are in the inbox by then too.
ARRIVAL_DELAY = timedelta(hours=10)


def start_fake_judge(truth: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    """The fake judge in its own process (so it does not share our GIL); returns its base URL."""
    return start_server_process("feedback_pipeline.demo.fake_openai", "--truth", str(truth), port=port)


def demo_weeks(weeks: int = DEMO_WEEKS) -> list[str]:
    return [(DEMO_FIRST_WEEK + timedelta(days=7 * i)).isoformat() for i in range(weeks)]


def deliver_week_files(world: Path, landing: Path, week: str) -> int:
    """Move one week's generated landing files into landing/ (what the agents' exporter does)."""
    moved = 0
    for source in sorted((world / "landing").glob(f"*/{week}")):
        target = landing / source.parent.name / week
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)
        moved += sum(1 for p in target.rglob("*") if p.is_file())
    return moved


def deliver_labels(home: FeedbackHome, truth: pl.DataFrame, week: str, seed: int) -> None:
    """The simulated annotators label the week's queue, as exported, into labels/inbox/."""
    with home.warehouse(read_only=True) as con:
        queue = con.execute("SELECT * FROM annotation_queue WHERE week = ?", [week]).pl()
    write_demo_labels(queue, truth, home.labels_inbox, week, seed)


def run_demo(seed: int = 7, turns_per_week: int = DEMO_TURNS_PER_WEEK, weeks: int = DEMO_WEEKS,
             instance: dg.DagsterInstance | None = None) -> None:
    """Play `weeks` weeks of the demo world through the automation, on `instance` (default:
    the one in $DAGSTER_HOME, so `make ui` shows the runs)."""
    home = FeedbackHome()
    started = time.perf_counter()
    world_dir = home.root / WORLD_DIR
    world = generate_world(world_dir, seed=seed, weeks=weeks, turns_per_week=turns_per_week)
    for sub in ("landing/demo", "landing/resend", "demo_truth"):
        shutil.rmtree(home.root / sub, ignore_errors=True)
    shutil.copytree(world_dir / "demo_truth", home.root / "demo_truth")
    print(f"demo world: {world['turns_written']:,} turns, {sum(world['malformed_written'].values())} "
          f"malformed records, {world['duplicates_written']} duplicates; arriving week by week in {home.landing}")
    truth_path = home.root / "demo_truth" / "turn_truth.parquet"
    truth = pl.read_parquet(truth_path)
    proc, url = start_fake_judge(truth_path)
    agent_proc, agent_url = start_fake_agent()  # the world's agent versions, for the held-out replay
    try:
        judge = JudgeResource(base_url=url, model="fake-judge-1",
                              max_judge_calls_per_week=DEMO_JUDGE_CALLS_PER_WEEK)
        ticker = AutomationTicker(
            defs=build_defs({"home": home, "judge": judge, "agent": AgentReplayResource(
                base_url=agent_url, model_template="{agent_id}/{version}")}), instance=instance or current_instance(),
            run_config={"annotation_queue": {"config": {"labels_per_agent_week": DEMO_LABELS_PER_AGENT_WEEK}},
                        # The world is dated Sep-Nov 2026: its last labels may be later than the moment
                        # you run the demo, which the import would otherwise refuse as "in the future".
                        "human_labels": {"config": {"clock_skew_minutes": DEMO_CLOCK_SKEW_MINUTES}}})
        played = demo_weeks(weeks)
        for i, week in enumerate([*played, None]):
            t0, now = time.perf_counter(), week_end(week or played[-1]) + ARRIVAL_DELAY
            files = deliver_week_files(world_dir, home.landing, week) if week else 0
            if i > 0:
                deliver_labels(home, truth, played[i - 1], seed)
            runs = ticker.run_until_quiet(now)
            print(f"{now:%Y-%m-%d %H:%M} (simulated): {files} landing file(s)"
                  f"{f', labels for {played[i - 1]}' if i > 0 else ''} -> {runs} run(s) by automation "
                  f"in {time.perf_counter() - t0:.1f} s")
    finally:
        stop_servers(proc, agent_proc)
    print_summary(home, truth, played[-1])
    print(f"done in {time.perf_counter() - started:.0f} s")


def stop_servers(*procs: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the loopback servers; SIGKILL one still running `grace_s` later (on a loaded
    machine a server was seen to outlive its SIGTERM, and the demo must still finish)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def print_heldout(home: FeedbackHome) -> None:
    """The loop's own health measure: each week's agent version replayed on the held-out set."""
    with home.warehouse(read_only=True) as con:
        rows = con.execute("""
            SELECT agent_id, strftime(week, '%m-%d') AS week,
                   printf('%.2f [%.2f, %.2f]', pass_rate, pass_rate_ci_low, pass_rate_ci_high) AS pass_rate
            FROM loop_health WHERE pass_rate_source = 'replay' AND pass_rate IS NOT NULL ORDER BY week
        """).pl()
    if rows.is_empty():
        return
    print("held-out pass rate by replay (the week's live version answers the held-out set; 95 % CI):")
    for (agent,), group in rows.group_by("agent_id", maintain_order=True):
        print(f"  {agent:<18} " + "  ".join(f"{w} {p}" for w, p in group.select("week", "pass_rate").iter_rows()))


def print_impact(home: FeedbackHome) -> None:
    """Each detected change: the human-labeled failure rate effect, thumbs and shape, proxy flag."""
    with home.warehouse(read_only=True) as con:
        rows = con.execute("""
            SELECT change_id, metric, effect, ci_low, ci_high, coalesce(p_adjusted, p_value) AS p_adjusted, proxy_gaming
            FROM impact_metrics
            WHERE (metric = 'failure_rate' AND method = 'hajek')
               OR (metric IN ('judge_failure_rate', 'thumbs_down_rate', 'response_chars', 'refusal_rate'))
               OR (metric = 'eval_pass_rate' AND method = 'mcnemar')
            ORDER BY change_id, metric
        """).pl()
    print("impact of each detected change (effect = after - before, 95 % CI, BH-adjusted p;"
          " eval_pass_rate: old vs new version replayed on the same held-out cases):")
    for (change,), group in rows.group_by("change_id", maintain_order=True):
        flag = "  ** PROXY GAMING **" if group["proxy_gaming"].any() else ""
        print(f"  {change}{flag}")
        for r in group.iter_rows(named=True):
            if r["effect"] is None:
                continue
            print(f"    {r['metric']:<20} {r['effect']:+9.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                  f"  p_adj={r['p_adjusted']:.3g}")


def print_summary(home: FeedbackHome, truth: pl.DataFrame, last_week: str) -> None:
    with home.warehouse(read_only=True) as con:
        loaded = con.execute("SELECT count(*) FROM raw_traces").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM ingest_quarantine").fetchone()[0]
        reasons = con.execute(
            "SELECT field, count(*) FROM ingest_quarantine GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
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
    print_heldout(home)
    print(f"warehouse: {home.warehouse_location.describe()}")
    print(f"queue exports: {home.exports / 'annotation_queue'}; eval sets: {home.exports / 'eval_sets'}")
    print(f"report: {home.exports / 'reports' / (last_week + '.html')}")
    print(f"analysts: duckdb -readonly {home.exports / 'analyst.duckdb'}")
    print("next: `make ui` and open http://127.0.0.1:3000 (runs, metadata and checks of this demo),")
    if home.warehouse_location.is_lake:
        print("      or attach the lake read-only to query the tables (docs/scaling.md)")
    else:
        print(f"      or `duckdb -readonly {home.warehouse_path}` to query the tables")
