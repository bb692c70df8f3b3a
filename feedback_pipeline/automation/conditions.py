"""When each asset refreshes: its declarative automation condition, said in one table.

Partition-to-partition edges (raw_traces[W] -> automated_scores[W] -> ...) are left to
Dagster's automation sensor. Edges from an unpartitioned table to weekly partitions
(a label file -> quality_estimates[W]) would mark every week as updated, so those
inputs are ignored here and `sensors.py` requests exactly the weeks that changed.
Conditions only: what a run computes is the assets', what launches it is Dagster's.
"""

from __future__ import annotations

import dagster as dg

AC = dg.AutomationCondition

# Unpartitioned inputs of weekly tables: their change would mark every week as updated.
CROSS_WEEK_INPUTS = ("human_labels", "impact_metrics", "loop_health", "release_changes")
# Weekly tables: a cross-week table never waits for weeks that were never loaded.
WEEKLY_INPUTS = ("raw_traces", "ingest_quarantine", "automated_scores", "annotation_queue", "quality_estimates",
                 "eval_set_snapshots", "eval_set_manifests", "heldout_replay", "label_studio_tasks", "weekly_report")


def refresh_when_inputs_change(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """`eager()` for every week, not only the latest: a late file or a correction for an
    old week refreshes that week. Waits for missing or running inputs and for the
    inputs' blocking checks; `ignore` names inputs that do not trigger it."""
    ignored = dg.AssetSelection.assets(*ignore)
    updated, missing = AC.any_deps_updated(), AC.any_deps_missing()
    if ignore:
        updated, missing = updated.ignore(ignored), missing.ignore(ignored)
    return (
        (AC.newly_missing() | updated).since_last_handled()
        & ~missing
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
        & AC.all_deps_blocking_checks_passed()
    ).with_label("refresh when inputs change" + (f" (not {', '.join(ignore)})" if ignore else ""))


def refresh_cross_week() -> dg.AutomationCondition:
    """For tables that span weeks: refresh when any week's input changes, once the other
    cross-week inputs exist and none of its inputs is about to change again. Weeks never
    loaded are not waited for (they are simply not in the table yet)."""
    return ((AC.newly_missing() | AC.any_deps_updated()).since_last_handled()
            & ~AC.any_deps_missing().ignore(dg.AssetSelection.assets(*WEEKLY_INPUTS))
            & ~AC.any_deps_match(AC.will_be_requested() | AC.in_progress())  # computed once, after its inputs
            & ~AC.in_progress()).with_label("refresh when any week's input changes, once they have settled")


def ingest_newly_closed_week() -> dg.AutomationCondition:
    """A week is ingested once when it closes; files for older weeks come via the landing sensor."""
    return (AC.in_latest_time_window() & AC.newly_missing().since_last_handled()
            & ~AC.in_progress()).with_label("ingest the week that just closed")


def build_once() -> dg.AutomationCondition:
    """Eval-set snapshots are immutable: built once, when the week's traces are in.
    Labels are read as of the week's end, so later label imports never trigger it."""
    ignored = dg.AssetSelection.assets("human_labels")
    return (
        AC.missing()
        & (AC.newly_missing() | AC.any_deps_updated().ignore(ignored)).since_last_handled()
        & ~AC.any_deps_missing().ignore(ignored)
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("build the week's snapshot once")


def report_when_settled() -> dg.AutomationCondition:
    """A week's report follows its own estimates, the latest week's also impact and health;
    never while a cross-week table it shows is about to change (it would be drawn twice)."""
    cross_week = dg.AssetSelection.assets(*CROSS_WEEK_INPUTS)
    # Not `newly_missing`: a new week's report waits for its estimates (drawn once, not before and after).
    trigger = (AC.any_deps_updated().ignore(cross_week)
               | (AC.in_latest_time_window() & AC.any_deps_updated().allow(cross_week)))
    settling = AC.any_deps_match(AC.will_be_requested() | AC.in_progress()).allow(cross_week)
    return (trigger.since_last_handled() & ~AC.any_deps_missing().ignore(cross_week) & ~settling
            & ~AC.any_deps_in_progress() & ~AC.in_progress()
            & AC.all_deps_blocking_checks_passed()).with_label(
        "refresh when the week's estimates change (the latest week: also impact and health), "
        "once the cross-week tables have settled")


CONDITIONS: dict[str, dg.AutomationCondition] = {
    "raw_traces": ingest_newly_closed_week(),
    "ingest_quarantine": ingest_newly_closed_week(),
    "automated_scores": refresh_when_inputs_change(),
    "annotation_queue": refresh_when_inputs_change(),
    "label_studio_tasks": refresh_when_inputs_change(),  # the queue pushed to Label Studio (when configured)
    # Escalation labels come from raw_traces; label files come through the inbox sensor.
    "human_labels": refresh_cross_week(),
    "label_quarantine": refresh_cross_week(),
    "label_agreement": refresh_cross_week(),
    "judge_calibration": refresh_cross_week(),
    "label_studio_adjudication": refresh_cross_week(),
    "quality_estimates": refresh_when_inputs_change(ignore=("human_labels",)),
    "eval_set_snapshots": build_once(),
    "eval_set_manifests": build_once(),
    "release_changes": refresh_cross_week(),
    "impact_metrics": refresh_cross_week(),
    # The week's held-out cases re-answered by the live version: once the snapshot is in (cached: a re-run asks nothing).
    "heldout_replay": refresh_when_inputs_change(),
    "loop_health": refresh_cross_week(),
    # A week's report follows its own estimates; the latest week's also follows impact and health.
    "weekly_report": report_when_settled(),
}


def with_conditions(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with the conditions above attached (shown in the UI's Automation tab)."""
    return list(dg.map_asset_specs(
        lambda spec: spec.replace_attributes(
            automation_condition=CONDITIONS.get(spec.key.to_user_string(), spec.automation_condition)),
        assets,
    ))
