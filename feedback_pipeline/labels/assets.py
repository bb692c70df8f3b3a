"""The labels stage's assets: human_labels, label_quarantine, label_agreement (one import) and judge_calibration.

Thin bodies: load from the warehouse (`storage.py`), compute with the pure functions
(`importing`, `agreement`, `annotator_stats`, `adjudication`, `calibration`), write,
report metadata. Keep the logic out of this module.
"""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl
from pydantic import Field

from feedback_pipeline import pools
from feedback_pipeline.checks import column_schema, markdown_table, only_selected, pandera_check
from feedback_pipeline.labels.adjudication import adjudication_list, write_adjudication_export
from feedback_pipeline.labels.agreement import agreement_summary
from feedback_pipeline.labels.annotator_stats import annotator_stats
from feedback_pipeline.labels.calibration import calibration_pairs
from feedback_pipeline.labels.calibration import judge_calibration as calibrate
from feedback_pipeline.labels.gold import gold_labels
from feedback_pipeline.labels.importing import current_with_weeks, import_labels, weeks_changed
from feedback_pipeline.labels.inbox import new_inbox_files
from feedback_pipeline.labels.label_studio_sync import push_tasks
from feedback_pipeline.labels.schemas import HumanLabels, JudgeCalibration, LabelAgreement, LabelQuarantine
from feedback_pipeline.labels.storage import migrate_label_tables, read_label_inputs, write_label_tables
from feedback_pipeline.labels.validation import DEFAULT_CLOCK_SKEW
from feedback_pipeline.label_studio_api import LabelStudioResource
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.rubrics import RUBRIC_ID, known_rubrics, load_rubric
from feedback_pipeline.warehouse import replace_table, table_exists

JUDGE_DRIFT_CHECK = "judge_drift"
_COMMON = dict(group_name="labels", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "labels"})


class LabelImportConfig(dg.Config):
    clock_skew_minutes: float = Field(
        default=DEFAULT_CLOCK_SKEW.total_seconds() / 60,
        description="How far past the import time a labeled_at may lie (the labeling side's clock "
                    "may run ahead); later ones are quarantined.")


@dg.multi_asset(
    specs=[
        dg.AssetSpec("human_labels", deps=["raw_traces", "annotation_queue"],
                     description="Every accepted human and escalation label with its file, line and import time; corrections supersede, history stays.",
                     metadata={"dagster/column_schema": column_schema(HumanLabels)}, **_COMMON),
        dg.AssetSpec("label_quarantine", deps=["raw_traces"],
                     description="Label rows or files that could not be accepted, each with file, line and a reason a person can act on.",
                     metadata={"dagster/column_schema": column_schema(LabelQuarantine)}, **_COMMON),
        dg.AssetSpec("label_agreement", deps=["raw_traces"],
                     description="Cohen's κ (pairs) and Krippendorff's α (3+ raters) per rubric version and week, on verdict and category.",
                     metadata={"dagster/column_schema": column_schema(LabelAgreement)}, **_COMMON),
    ],
    pool=pools.SERIAL,
    can_subset=True,
)
def human_labels(context: dg.AssetExecutionContext, home: FeedbackHome, config: LabelImportConfig):
    """Import every new file of labels/inbox (a file already imported, by hash, is skipped)."""
    yield from only_selected(context, _human_labels(context, home, config))


def _human_labels(context: dg.AssetExecutionContext, home: FeedbackHome, config: LabelImportConfig):
    imported_at = datetime.now(timezone.utc)
    with home.warehouse() as con:
        migrate_label_tables(con)
        stored = read_label_inputs(con)
        files = new_inbox_files(home.labels_inbox, stored.imported_hashes())
        result = import_labels(files, stored.history, stored.quarantine, stored.traces, known_rubrics(),
                               load_rubric(RUBRIC_ID).version, imported_at=imported_at,
                               clock_skew=timedelta(minutes=config.clock_skew_minutes))
        current = current_with_weeks(result.history, stored.traces)
        agreement = agreement_summary(current, week_col="week")
        raters = annotator_stats(current, week_col="week")
        write_label_tables(con, result.history, result.quarantine, agreement)
        queue = con.execute("SELECT * FROM annotation_queue").pl() if table_exists(con, "annotation_queue") else None
    adjudication = adjudication_list(current, queue)
    export = write_adjudication_export(home.exports / "adjudication", adjudication, load_rubric(RUBRIC_ID).version)
    accounting = {"files_imported": len(files), **result.stats,
                  "escalation_labels_added": result.escalation_labels_added}
    context.log.info(f"labels: {accounting}")
    yield dg.MaterializeResult(asset_key="human_labels", metadata={
        "dagster/row_count": result.history.height,
        "current_labels": int(result.history["is_current"].sum()),
        # The weeks whose labels this import changed: `labeled_weeks_sensor` refreshes exactly those.
        "weeks_changed": dg.MetadataValue.json(weeks_changed(result.history, stored.traces, imported_at)),
        **accounting,
        "to_adjudicate": adjudication.height,
        "adjudication_export": dg.MetadataValue.path(str(export)),
        "annotators": dg.MetadataValue.md(markdown_table(raters.head(30))),
    })
    yield dg.MaterializeResult(asset_key="label_quarantine", metadata={
        "dagster/row_count": result.quarantine.height, "new_this_run": result.new_quarantine.height,
        "reasons": dg.MetadataValue.md(markdown_table(result.new_quarantine.select("source_file", "reason").head(20))),
    })
    yield dg.MaterializeResult(asset_key="label_agreement", metadata={
        "dagster/row_count": agreement.height,
        "summary": dg.MetadataValue.md(markdown_table(agreement.head(30))),
    })


@dg.asset(
    deps=["automated_scores", "human_labels"],
    pool=pools.SERIAL,
    check_specs=[dg.AssetCheckSpec(JUDGE_DRIFT_CHECK, asset="judge_calibration",
                                   description="WARN when judge-human accuracy or κ fell beyond the threshold from the previous month.")],
    metadata={"dagster/column_schema": column_schema(JudgeCalibration)},
    **_COMMON,
)
def judge_calibration(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """How well the LLM judge agrees with humans on the same traces, per month and rubric version, and its bias."""
    with home.warehouse() as con:
        gold = gold_labels(con)
        judged = con.execute(
            "SELECT trace_id, week, judge_verdict, judge_failure_category FROM automated_scores "
            "WHERE judge_verdict IS NOT NULL").pl() if table_exists(con, "automated_scores") else None
        table = calibrate(calibration_pairs(gold, judged))
        replace_table(con, "judge_calibration", table)
    drifted = table.filter(pl.col("drift"))
    return dg.MaterializeResult(
        metadata={"dagster/row_count": table.height,
                  "by_month": dg.MetadataValue.md(markdown_table(table.drop("confusion")))},
        check_results=[dg.AssetCheckResult(
            check_name=JUDGE_DRIFT_CHECK, passed=drifted.is_empty(), severity=dg.AssetCheckSeverity.WARN,
            metadata={"drifted_months": dg.MetadataValue.json(drifted["month"].to_list())},
        )],
    )


def _push(context, tasks_file, week: str | None) -> dg.MaterializeResult:
    """Push a file export's tasks into Label Studio; metadata: the counts and stale tasks.
    Configured from $LABEL_STUDIO_URL / $LABEL_STUDIO_API_KEY at run time (unset: nothing to do)."""
    label_studio = LabelStudioResource()
    if not label_studio.enabled:
        return dg.MaterializeResult(metadata={"label_studio": "not configured (LABEL_STUDIO_URL unset)"})
    tasks = json.loads(tasks_file.read_text()) if tasks_file.exists() else []
    client = label_studio.client()
    try:
        stats = push_tasks(client, tasks, known_rubrics(), week=week)
    finally:
        client.close()
    stale = stats.pop("stale_tasks")
    if stale:
        context.log.warning(f"{len(stale)} Label Studio task(s) of week {week} are no longer in the queue "
                            f"(left in place, maybe already labeled): {stale[:10]}")
    context.log.info(f"label studio push: {stats}")
    return dg.MaterializeResult(metadata={
        **stats, "stale_tasks": len(stale),
        "stale": dg.MetadataValue.md(markdown_table(pl.DataFrame(stale[:30]))) if stale else "none"})


# Weekly, beside the queue it pushes: in the sampling group (the labels group spans weeks).
@dg.asset(partitions_def=weekly, deps=["annotation_queue"], pool=pools.WEEKLY, **{**_COMMON, "group_name": "sampling"})
def label_studio_tasks(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """The week's queue as Label Studio tasks, one project per agent and rubric version (when LABEL_STUDIO_URL is set)."""
    week = context.partition_key
    return _push(context, home.exports / "annotation_queue" / week / "label_studio_tasks.json", week)


@dg.asset(deps=["human_labels"], pool=pools.SERIAL, **_COMMON)
def label_studio_adjudication(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """The disagreements to adjudicate as Label Studio tasks, one adjudication project per agent and rubric version."""
    return _push(context, home.exports / "adjudication" / "label_studio_tasks.json", None)


human_labels_schema_check = pandera_check("human_labels", HumanLabels, partitioned=False)
label_quarantine_schema_check = pandera_check("label_quarantine", LabelQuarantine, partitioned=False)
label_agreement_schema_check = pandera_check("label_agreement", LabelAgreement, partitioned=False)
judge_calibration_schema_check = pandera_check("judge_calibration", JudgeCalibration, partitioned=False)
