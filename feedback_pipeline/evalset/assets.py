"""eval_set_snapshots + eval_set_manifests: the held-out eval set per agent, one immutable
snapshot a week. The asset reads (`store.py`), builds (`week.py`), writes the folders and
tables, and reports; the logic lives in the modules it calls.
"""

from datetime import date

import dagster as dg
import polars as pl

from feedback_pipeline import pools
from feedback_pipeline.checks import column_schema, markdown_table, only_selected, pandera_check
from feedback_pipeline.evalset.config import EvalSetConfig
from feedback_pipeline.evalset.exports import export_snapshot
from feedback_pipeline.evalset.manifest import manifest_frame
from feedback_pipeline.evalset.preference_pairs import export_preference_pairs
from feedback_pipeline.evalset.schemas import EvalSetManifests, EvalSetSnapshots
from feedback_pipeline.evalset.store import load_week, write_week
from feedback_pipeline.evalset.week import build_week
from feedback_pipeline.partitions import weekly
from feedback_pipeline.publish import write_analyst_db
from feedback_pipeline.resources import FeedbackHome

IMMUTABLE_CHECK = "snapshot_unchanged"
DPO_LEAK_CHECK = "preference_pairs_dev_only"
_COMMON = dict(group_name="evalset", kinds={"duckdb", "polars", "parquet"}, owners=["team:data-platform"],
               tags={"stage": "evalset"})


class EvalSetAssetConfig(dg.Config):
    test_share: float = 0.8
    canary_size: int = 20
    initial_target: int = 50
    growth_per_week: int = 25
    max_cases: int = 300
    redact_pii: bool = True


@dg.multi_asset(
    specs=[
        dg.AssetSpec("eval_set_snapshots", deps=["human_labels", "raw_traces"],
                     description="Per agent and week: the human-verified eval cases so far, with a stable test/dev split and a fixed canary.",
                     metadata={"dagster/column_schema": column_schema(EvalSetSnapshots)},
                     **_COMMON),
        dg.AssetSpec("eval_set_manifests", deps=["human_labels", "raw_traces"],
                     description="One row per snapshot: its content hash, size and creation time (written once).",
                     metadata={"dagster/column_schema": column_schema(EvalSetManifests)},
                     **_COMMON),
    ],
    partitions_def=weekly,
    pool=pools.SERIAL,
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
    # One warehouse session for read, build and write: opening the file is a good part of a week's run.
    with home.warehouse() as con:
        inputs = load_week(con, week)
        built = build_week(inputs.candidates, inputs.previous, inputs.stored, week,
                           EvalSetConfig(**config.model_dump()))
        if not built.mismatched:
            for rows, m in zip(built.snapshots, built.manifests):
                export_snapshot(rows, m, home.exports)
            write_week(con, week, built.rows, manifest_frame(built.manifests))
    if built.mismatched:
        yield from _refused(built.mismatched)  # never overwrite a published snapshot
        return
    pairs, leaks = export_preference_pairs(home.exports, built.rows, inputs.traces, week)
    analyst_db = write_analyst_db(home.exports)
    yield dg.MaterializeResult(
        asset_key="eval_set_snapshots",
        metadata={"dagster/row_count": built.rows.height,
                  "snapshots": dg.MetadataValue.md(markdown_table(pl.DataFrame(built.summary))),
                  "labels_outside_week": inputs.labels_outside_week,
                  "analyst_db": dg.MetadataValue.path(str(analyst_db)),
                  "exports": dg.MetadataValue.path(str(home.exports / "eval_sets"))},
        check_results=[
            dg.AssetCheckResult(check_name=IMMUTABLE_CHECK, passed=True,
                                metadata={"verified_existing": len(inputs.stored)}),
            dg.AssetCheckResult(check_name=DPO_LEAK_CHECK, passed=not leaks,
                                metadata={"pairs": pairs, "leaks": dg.MetadataValue.json(leaks[:20])}),
        ],
    )
    yield dg.MaterializeResult(asset_key="eval_set_manifests",
                               metadata={"dagster/row_count": len(built.manifests)})


def _refused(mismatched: list[str]):
    """The results of a week that would change a stored snapshot: nothing written, the check failed."""
    yield dg.MaterializeResult(asset_key="eval_set_snapshots", metadata={"mismatched": mismatched},
                               check_results=[
                                   dg.AssetCheckResult(
                                       check_name=IMMUTABLE_CHECK, passed=False,
                                       metadata={"snapshots_that_would_change": dg.MetadataValue.json(mismatched)}),
                                   dg.AssetCheckResult(check_name=DPO_LEAK_CHECK, passed=True,
                                                       metadata={"skipped": "snapshots not written"}),
                               ])
    yield dg.MaterializeResult(asset_key="eval_set_manifests", metadata={"written": 0})


eval_set_snapshots_schema_check = pandera_check("eval_set_snapshots", EvalSetSnapshots)
eval_set_manifests_schema_check = pandera_check("eval_set_manifests", EvalSetManifests)
