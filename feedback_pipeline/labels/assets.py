"""The labels stage's assets: human_labels, label_quarantine, label_agreement (one import) and judge_calibration."""

import json
from datetime import datetime, timezone

import dagster as dg
import polars as pl

from feedback_pipeline.checks import markdown_table, column_schema, only_selected, pandera_check
from feedback_pipeline.files import file_sha256
from feedback_pipeline.frames import empty_frame
from feedback_pipeline.label_studio import queue_to_label_studio_tasks
from feedback_pipeline.labels.agreement import adjudication_list, agreement_summary, annotator_stats
from feedback_pipeline.labels.calibration import judge_calibration as calibrate
from feedback_pipeline.labels.gold import gold_labels
from feedback_pipeline.labels.inbox import inbox_files
from feedback_pipeline.labels.parse import (
    HUMAN_LABEL_COLUMNS,
    escalation_labels,
    merge_labels,
    read_label_file,
    validate_labels,
)
from feedback_pipeline.labels.schemas import (
    HumanLabels,
    JudgeCalibration,
    LabelAgreement,
    LabelQuarantine,
)
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.rubrics import RUBRIC_ID, known_rubrics, load_rubric
from feedback_pipeline.warehouse import replace_table, table_exists, transaction

JUDGE_DRIFT_CHECK = "judge_drift"
_COMMON = dict(group_name="labels", kinds={"duckdb", "polars"}, owners=["team:data-platform"],
               tags={"stage": "labels"})


def _label_weeks(con, labels: pl.DataFrame) -> pl.DataFrame:
    weeks = con.execute("SELECT trace_id, week FROM raw_traces").pl()
    return labels.join(weeks, on="trace_id", how="left")


@dg.multi_asset(
    specs=[
        dg.AssetSpec("human_labels", deps=["raw_traces", "annotation_queue"],
                     description="Every accepted human and escalation label with its file, row and import time; corrections supersede, history stays.",
                     metadata={"dagster/column_schema": column_schema(HumanLabels)}, **_COMMON),
        dg.AssetSpec("label_quarantine", deps=["raw_traces"],
                     description="Label rows or files that could not be accepted, each with file, row and a reason a person can act on.",
                     metadata={"dagster/column_schema": column_schema(LabelQuarantine)}, **_COMMON),
        dg.AssetSpec("label_agreement", deps=["raw_traces"],
                     description="Cohen's κ (pairs) and Krippendorff's α (3+ raters) per rubric version and week, on verdict and category.",
                     **_COMMON),
    ],
    pool="warehouse",
    can_subset=True,
)
def human_labels(context: dg.AssetExecutionContext, home: FeedbackHome):
    """Import every new file of labels/inbox (a file already imported, by hash, is skipped)."""
    yield from only_selected(context, _human_labels(context, home))


def _human_labels(context: dg.AssetExecutionContext, home: FeedbackHome):
    imported_at = datetime.now(timezone.utc)
    with home.warehouse() as con:
        history = con.execute("SELECT * FROM human_labels").pl() if table_exists(con, "human_labels") else None
        old_quarantine = (con.execute("SELECT * FROM label_quarantine").pl()
                          if table_exists(con, "label_quarantine") else empty_frame(LabelQuarantine))
        seen = set(old_quarantine["file_sha256"].drop_nulls().to_list())
        if history is not None:
            seen |= set(history["file_sha256"].drop_nulls().to_list())
        new_files = [p for p in inbox_files(home.labels_inbox) if file_sha256(p) not in seen]
        candidates, problems = [], []
        for path in new_files:
            found, bad = read_label_file(path)
            rel = str(path.relative_to(home.labels_inbox))
            candidates.append(found.with_columns(pl.lit(rel).alias("source_file")))
            problems.append(bad.with_columns(pl.lit(rel).alias("source_file")))
        trace_ids = con.execute("SELECT trace_id FROM raw_traces").pl()["trace_id"] \
            if table_exists(con, "raw_traces") else pl.Series([], dtype=pl.String)
        if candidates:
            accepted, quarantined = validate_labels(pl.concat(candidates), trace_ids, known_rubrics())
            quarantined = pl.concat([*problems, quarantined], how="diagonal_relaxed")
        else:
            accepted, quarantined = None, pl.concat(problems) if problems else None
        n_quarantined = quarantined.height if quarantined is not None else 0
        history, stats = merge_labels(history, accepted if accepted is not None else
                                      pl.DataFrame(schema=HUMAN_LABEL_COLUMNS).drop("imported_at", "is_current", "superseded_by"),
                                      quarantined=n_quarantined, imported_at=imported_at)
        escalations = escalation_labels(con.execute(
            "SELECT trace_id, escalated, escalation_reason, timestamp FROM raw_traces WHERE escalated").pl(),
            load_rubric(RUBRIC_ID).version) \
            if table_exists(con, "raw_traces") else None
        if escalations is not None:
            history, esc_stats = merge_labels(history, escalations, imported_at=imported_at)
        else:
            esc_stats = {"accepted": 0}
        new_quarantine = (quarantined.with_columns(pl.lit(imported_at).alias("quarantined_at"))
                          .select(list(LabelQuarantine.to_schema().columns))
                          if quarantined is not None and quarantined.height else empty_frame(LabelQuarantine))
        all_quarantine = pl.concat([old_quarantine, new_quarantine.cast(old_quarantine.schema)])
        current = _label_weeks(con, history.filter(pl.col("is_current")))
        agreement = agreement_summary(current, week_col="week")
        raters = annotator_stats(current, week_col="week")
        with transaction(con):
            replace_table(con, "human_labels", history.select(list(HUMAN_LABEL_COLUMNS)), atomic=False)
            replace_table(con, "label_quarantine", all_quarantine, atomic=False)
            replace_table(con, "label_agreement", agreement, atomic=False)
        queue = con.execute("SELECT * FROM annotation_queue").pl() if table_exists(con, "annotation_queue") else None
    adjudication = adjudication_list(current, queue)
    export = _export_adjudication(home, adjudication)
    accounting = {
        "files_imported": len(new_files),
        "read": stats["read"], "accepted": stats["accepted"], "duplicates": stats["duplicates"],
        "quarantined": stats["quarantined"], "superseded": stats["superseded"],
        "escalation_labels_added": esc_stats["accepted"],
    }
    context.log.info(f"labels: {accounting}")
    yield dg.MaterializeResult(asset_key="human_labels", metadata={
        "dagster/row_count": history.height,
        "current_labels": int(history["is_current"].sum()),
        **accounting,
        "to_adjudicate": adjudication.height,
        "adjudication_export": dg.MetadataValue.path(export),
        "annotators": dg.MetadataValue.md(markdown_table(raters.head(30))),
    })
    yield dg.MaterializeResult(asset_key="label_quarantine", metadata={
        "dagster/row_count": all_quarantine.height, "new_this_run": new_quarantine.height,
        "reasons": dg.MetadataValue.md(markdown_table(new_quarantine.select("source_file", "reason").head(20))),
    })
    yield dg.MaterializeResult(asset_key="label_agreement", metadata={
        "dagster/row_count": agreement.height,
        "summary": dg.MetadataValue.md(markdown_table(agreement.head(30))),
    })


def _export_adjudication(home: FeedbackHome, adjudication: pl.DataFrame) -> str:
    folder = home.exports / "adjudication"
    folder.mkdir(parents=True, exist_ok=True)
    flat = adjudication.with_columns(
        [pl.col(c).cast(pl.String) for c, t in adjudication.schema.items() if t in (pl.Date,)]
    )
    (folder / "adjudication.csv").write_text(
        flat.select([c for c, t in flat.schema.items() if not isinstance(t, (pl.List, pl.Struct))]).write_csv())
    if {"user_message", "agent_response", "context", "queue_position", "week", "agent_id", "stratum",
            "inclusion_prob"} <= set(adjudication.columns) and adjudication.height:
        tasks = queue_to_label_studio_tasks(adjudication.drop_nulls("week"), load_rubric(RUBRIC_ID).version,
                                            label_source="adjudication")
        (folder / "label_studio_tasks.json").write_text(json.dumps(tasks, ensure_ascii=False))
    return str(folder)


@dg.asset(
    deps=["automated_scores", "human_labels"],
    pool="warehouse",
    check_specs=[dg.AssetCheckSpec(JUDGE_DRIFT_CHECK, asset="judge_calibration",
                                   description="WARN when judge-human accuracy or κ fell beyond the threshold from the previous month.")],
    **_COMMON,
)
def judge_calibration(context: dg.AssetExecutionContext, home: FeedbackHome) -> dg.MaterializeResult:
    """How well the LLM judge agrees with humans on the same traces, per month and rubric version, and its bias."""
    with home.warehouse() as con:
        gold = gold_labels(con)
        judged = con.execute(
            "SELECT trace_id, week, judge_verdict, judge_failure_category FROM automated_scores "
            "WHERE judge_verdict IS NOT NULL").pl() if table_exists(con, "automated_scores") else None
        pairs = gold.join(judged, on="trace_id") if judged is not None else None
        table = calibrate(pairs) if pairs is not None and pairs.height else calibrate(
            pl.DataFrame(schema={"trace_id": pl.String, "week": pl.Date, "rubric_version": pl.String,
                                 "verdict": pl.String, "failure_category": pl.String,
                                 "judge_verdict": pl.String, "judge_failure_category": pl.String}))
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


human_labels_schema_check = pandera_check("human_labels", HumanLabels, partitioned=False)
label_quarantine_schema_check = pandera_check("label_quarantine", LabelQuarantine, partitioned=False)
label_agreement_schema_check = pandera_check("label_agreement", LabelAgreement, partitioned=False)
judge_calibration_schema_check = pandera_check("judge_calibration", JudgeCalibration, partitioned=False)
