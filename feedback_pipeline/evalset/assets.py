"""eval_set_snapshots + eval_set_manifests: the held-out eval set per agent, one immutable snapshot a week."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone

import dagster as dg
import polars as pl

from feedback_pipeline.checks import markdown_table, column_schema, only_selected, pandera_check
from feedback_pipeline.evalset.exports import (
    check_no_heldout_leak,
    dpo_pairs,
    export_snapshot,
)
from feedback_pipeline.evalset.schemas import EvalSetManifests, EvalSetSnapshots
from feedback_pipeline.evalset.snapshot import (
    SNAPSHOT_COLUMNS,
    EvalSetConfig,
    build_snapshot,
    candidate_cases,
    diff_snapshots,
    labels_as_of,
    manifest,
    manifest_frame,
)
from feedback_pipeline.labels.agreement import resolve_labels
from feedback_pipeline.partitions import weekly
from feedback_pipeline.publish import write_analyst_db
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.warehouse import read_week, replace_week_frame, table_exists, transaction

IMMUTABLE_CHECK = "snapshot_unchanged"
DPO_LEAK_CHECK = "preference_pairs_dev_only"
_COMMON = dict(group_name="evalset", kinds={"duckdb", "polars", "parquet"}, owners=["team:data-platform"],
               tags={"stage": "evalset"})


# What candidate_cases and dpo_pairs read of a trace; the other columns (tool calls, extra
# JSON, ...) made the read half as slow again.
TRACE_COLUMNS = ("trace_id", "conversation_id", "turn_index", "agent_id", "user_id", "user_message",
                 "agent_response", "thumbs", "escalated", "user_rewrote")


class EvalSetAssetConfig(dg.Config):
    test_share: float = 0.8
    canary_size: int = 20
    initial_target: int = 50
    growth_per_week: int = 25
    max_cases: int = 300
    redact_pii: bool = True


def labels_known_by(history: pl.DataFrame, week_end: datetime) -> pl.DataFrame:
    """Labels made before the week closed (by `labeled_at`): what the week's snapshot may use.

    Using the label's own time keeps a week's snapshot reproducible when files are
    imported late; a label dated into a past week arriving later changes that week's
    recomputation, and the immutability check then fails loudly instead of rewriting it.
    """
    made = history.filter(pl.col("labeled_at") < week_end)
    return labels_as_of(made, datetime.max.replace(tzinfo=timezone.utc))


def export_preference_pairs(home: FeedbackHome, rows: pl.DataFrame, traces: pl.DataFrame | None,
                            week: date) -> tuple[int, list[str]]:
    """DPO/TRL pairs (prompt, chosen, rejected) from the dev split only, per agent, under
    exports/preference_pairs/<agent>/<week>.jsonl; returns (pairs, leak messages)."""
    if traces is None or rows.is_empty():
        return 0, []
    pairs = dpo_pairs(rows, traces)
    leaks = check_no_heldout_leak(pairs, rows)
    if leaks:
        return pairs.height, leaks  # never write a file that leaks held-out conversations
    for (agent,), mine in pairs.partition_by("agent_id", as_dict=True).items():
        folder = home.exports / "preference_pairs" / agent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{week.isoformat()}.jsonl.tmp"
        mine.write_ndjson(tmp)
        tmp.replace(folder / f"{week.isoformat()}.jsonl")
    return pairs.height, []


def build_week(candidates: pl.DataFrame | None, previous: pl.DataFrame, stored: dict[str, dict], week: date,
               cfg: EvalSetConfig) -> tuple[list[pl.DataFrame], list[dict], list[dict], list[str]]:
    """(snapshot rows, manifests, summary rows, mismatched snapshot ids) of every agent for the week.

    `stored` holds the week's manifests already written (by snapshot_id): a snapshot whose
    recomputed hash differs from its stored one is listed as mismatched, not returned.
    """
    agents = sorted(set(candidates["agent_id"].unique().to_list() if candidates is not None else [])
                    | set(previous["agent_id"].unique().to_list() if previous.height else []))
    now = datetime.now(timezone.utc)
    cands = candidates if candidates is not None else pl.DataFrame(schema=SNAPSHOT_COLUMNS)
    prevs = {a: previous.filter(pl.col("agent_id") == a) if previous.height else None for a in agents}

    def build(agent: str) -> tuple[pl.DataFrame, dict]:
        prev = prevs[agent]
        return build_snapshot(prev if prev is not None and prev.height else None, cands, agent, week, cfg)

    # Agents are independent and their work is mostly Polars and numpy, which release the GIL.
    with ThreadPoolExecutor() as pool:
        built = list(pool.map(build, agents))
    snapshots, manifests, reports, mismatched = [], [], [], []
    for agent, (rows, report) in zip(agents, built):
        prev = prevs[agent]
        snapshot_id = f"{agent}@{week.isoformat()}"
        old = stored.get(snapshot_id)
        m = manifest(rows, created_at=old["created_at"] if old else now, agent_id=agent, week=week)
        if old is not None and m["content_hash"] != old["content_hash"]:  # verify_immutable, hashing once
            mismatched.append(snapshot_id)
            continue
        diff = diff_snapshots(prev, rows) if prev is not None and prev.height else None
        reports.append({
            "snapshot_id": snapshot_id, "n_cases": report["n_cases"], "added": report["n_added"],
            "relabeled": report["n_relabeled"], "canary": report["n_canary"],
            "left_out": ", ".join(f"{k}: {v}" for k, v in report["left_out_by_reason"].items() if v),
            "removed": int((diff["change"] == "removed").sum()) if diff is not None else 0,
            "hash": m["content_hash"][:12],
        })
        snapshots.append(rows)
        manifests.append(m)
    return snapshots, manifests, reports, mismatched


@dg.multi_asset(
    specs=[
        dg.AssetSpec("eval_set_snapshots", deps=["human_labels", "raw_traces"],
                     description="Per agent and week: the human-verified eval cases so far, with a stable test/dev split and a fixed canary.",
                     metadata={"dagster/column_schema": column_schema(EvalSetSnapshots)},
                     **_COMMON),
        dg.AssetSpec("eval_set_manifests", deps=["human_labels"],
                     description="One row per snapshot: its content hash, size and creation time (written once).",
                     metadata={"dagster/column_schema": column_schema(EvalSetManifests)},
                     **_COMMON),
    ],
    partitions_def=weekly,
    pool="warehouse",
    check_specs=[
        dg.AssetCheckSpec(
            IMMUTABLE_CHECK, asset="eval_set_snapshots", blocking=True,
            description="Re-materializing a week must reproduce the stored hash of every snapshot; nothing is overwritten.",
        ),
        dg.AssetCheckSpec(
            DPO_LEAK_CHECK, asset="eval_set_snapshots", blocking=True,
            description="The preference-pair export holds no conversation of the held-out (test) split.",
        ),
    ],
    can_subset=True,
)
def eval_set_snapshots(context: dg.AssetExecutionContext, config: EvalSetAssetConfig, home: FeedbackHome):
    yield from only_selected(context, _eval_set_snapshots(context, config, home))


def _eval_set_snapshots(context: dg.AssetExecutionContext, config: EvalSetAssetConfig, home: FeedbackHome):
    week = date.fromisoformat(context.partition_key)
    week_end = datetime.combine(week + timedelta(days=7), time(0), timezone.utc)
    cfg = EvalSetConfig(test_share=config.test_share, canary_size=config.canary_size,
                        initial_target=config.initial_target, growth_per_week=config.growth_per_week,
                        max_cases=config.max_cases, redact_pii=config.redact_pii)
    # One warehouse session for read, build and write: opening the file is a good part of a week's run.
    with home.warehouse() as con:
        history = con.execute("SELECT * FROM human_labels").pl() if table_exists(con, "human_labels") else None
        traces = None
        if history is None or history.is_empty():
            candidates, previous, existing = None, pl.DataFrame(), pl.DataFrame()
        else:
            labels = labels_known_by(history, week_end)
            gold = resolve_labels(labels)
            escalations = labels.filter(pl.col("is_current") & (pl.col("source") == "escalation"))
            con.register("_labeled", pl.concat([gold.select("trace_id"), escalations.select("trace_id")]))
            traces = con.execute(f"""
                SELECT {", ".join(TRACE_COLUMNS)} FROM raw_traces WHERE timestamp < ? AND conversation_id IN (
                    SELECT conversation_id FROM raw_traces JOIN _labeled USING (trace_id))
            """, [week_end]).pl()
            con.unregister("_labeled")
            candidates = candidate_cases(gold, traces, escalations, week)
            previous = con.execute("""
                SELECT * FROM eval_set_snapshots WHERE week < ?
                QUALIFY week = max(week) OVER (PARTITION BY agent_id)
            """, [week]).pl() if table_exists(con, "eval_set_snapshots") else pl.DataFrame()
        existing = read_week(con, "eval_set_manifests", week)
        stored = {r["snapshot_id"]: r for r in existing.iter_rows(named=True)} if existing.height else {}
        snapshots, manifests, reports, mismatched = build_week(candidates, previous, stored, week, cfg)
        all_rows = pl.concat(snapshots) if snapshots else pl.DataFrame(schema=SNAPSHOT_COLUMNS)
        manifest_rows = manifest_frame(manifests)
        if not mismatched:
            for rows, m in zip(snapshots, manifests):
                export_snapshot(rows, m, home.exports)
            with transaction(con):
                replace_week_frame(con, "eval_set_snapshots", week, all_rows.select(list(SNAPSHOT_COLUMNS)),
                                   atomic=False)
                replace_week_frame(con, "eval_set_manifests", week, manifest_rows, atomic=False)
    if mismatched:
        # Never overwrite a published snapshot: report and write nothing for this week.
        yield dg.MaterializeResult(asset_key="eval_set_snapshots", metadata={"mismatched": mismatched},
                                   check_results=[
                                       dg.AssetCheckResult(
                                           check_name=IMMUTABLE_CHECK, passed=False,
                                           metadata={"snapshots_that_would_change": dg.MetadataValue.json(mismatched)}),
                                       dg.AssetCheckResult(check_name=DPO_LEAK_CHECK, passed=True,
                                                           metadata={"skipped": "snapshots not written"}),
                                   ])
        yield dg.MaterializeResult(asset_key="eval_set_manifests", metadata={"written": 0})
        return
    pairs, leaks = export_preference_pairs(home, all_rows, traces, week)
    analyst_db = write_analyst_db(home.exports)
    summary = pl.DataFrame(reports) if reports else pl.DataFrame()
    yield dg.MaterializeResult(
        asset_key="eval_set_snapshots",
        metadata={"dagster/row_count": all_rows.height, "snapshots": dg.MetadataValue.md(markdown_table(summary)),
                  "analyst_db": dg.MetadataValue.path(str(analyst_db)),
                  "exports": dg.MetadataValue.path(str(home.exports / "eval_sets"))},
        check_results=[
            dg.AssetCheckResult(check_name=IMMUTABLE_CHECK, passed=True,
                                metadata={"verified_existing": len(stored)}),
            dg.AssetCheckResult(check_name=DPO_LEAK_CHECK, passed=not leaks,
                                metadata={"pairs": pairs, "leaks": dg.MetadataValue.json(leaks[:20])}),
        ],
    )
    yield dg.MaterializeResult(asset_key="eval_set_manifests",
                               metadata={"dagster/row_count": manifest_rows.height})


eval_set_snapshots_schema_check = pandera_check("eval_set_snapshots", EvalSetSnapshots)
eval_set_manifests_schema_check = pandera_check("eval_set_manifests", EvalSetManifests)
