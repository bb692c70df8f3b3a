"""When each asset refreshes: its declarative automation condition, said in one table.

Partition-to-partition edges (raw_traces[W] -> automated_scores[W] -> ...) are left to
Dagster's automation sensor. Edges from an unpartitioned table to weekly partitions
(a label file -> quality_estimates[W]) would mark every week as updated, so those
inputs are ignored here and `sensors.py` requests exactly the weeks that changed.
Conditions only: what a run computes is the assets', what launches it is Dagster's.

A table that spans weeks (and a week's report, which shows such tables) waits until its
inputs have settled, so it is computed once per wave of changes, not once per input.
Dagster's `will_be_requested()` cannot say that across partitionings (it is false for a
dependency that cannot run in the same run as the asset asking), so each asset's trigger
is kept here and "pending" is that trigger, not yet handled, on the input or on a weekly
input one step upstream of it: `with_conditions` builds it from the asset graph.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import reduce

import dagster as dg

AC = dg.AutomationCondition

# Unpartitioned inputs of weekly tables: their change would mark every week as updated.
CROSS_WEEK_INPUTS = ("human_labels", "impact_metrics", "loop_health", "release_changes")
# Weekly tables: a cross-week table never waits for weeks that were never loaded.
WEEKLY_INPUTS = ("raw_traces", "ingest_quarantine", "automated_scores", "annotation_queue", "quality_estimates",
                 "eval_set_snapshots", "eval_set_manifests", "heldout_replay", "label_studio_tasks", "weekly_report")
NOT_A_TRIGGER = {"quality_estimates": ("human_labels",), "eval_set_snapshots": ("human_labels",),
                 "eval_set_manifests": ("human_labels",)}
CROSS_WEEK = ("human_labels", "label_quarantine", "label_agreement", "judge_calibration", "label_studio_adjudication",
              "release_changes", "impact_metrics", "loop_health")


def _updated(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    return AC.any_deps_updated().ignore(dg.AssetSelection.assets(*ignore)) if ignore else AC.any_deps_updated()


def _missing(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    return AC.any_deps_missing().ignore(dg.AssetSelection.assets(*ignore)) if ignore else AC.any_deps_missing()


# Each asset's trigger: something it reads changed and it has not run since.
def changed(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    return (AC.newly_missing() | _updated(ignore)).since_last_handled()


def newly_closed() -> dg.AutomationCondition:
    return AC.in_latest_time_window() & AC.newly_missing().since_last_handled()


def not_built() -> dg.AutomationCondition:
    return AC.missing() & changed(NOT_A_TRIGGER["eval_set_snapshots"])


def report_changed() -> dg.AutomationCondition:
    # Not `newly_missing`: a new week's report waits for its estimates (drawn once, not before and after).
    cross_week = dg.AssetSelection.assets(*CROSS_WEEK_INPUTS)
    return (AC.any_deps_updated().ignore(cross_week)
            | (AC.in_latest_time_window() & AC.any_deps_updated().allow(cross_week))).since_last_handled()


TRIGGERS: dict[str, dg.AutomationCondition] = {
    "raw_traces": newly_closed(),
    "ingest_quarantine": newly_closed(),
    "eval_set_snapshots": not_built(),
    "eval_set_manifests": not_built(),
    "quality_estimates": changed(NOT_A_TRIGGER["quality_estimates"]),
    "weekly_report": report_changed(),
}


def trigger(name: str) -> dg.AutomationCondition:
    return TRIGGERS.get(name) or changed()


def may_wait_for(name: str) -> tuple[str, ...]:
    """Inputs whose absence does not hold the asset back."""
    if name in CROSS_WEEK:
        return WEEKLY_INPUTS
    return {"weekly_report": CROSS_WEEK_INPUTS}.get(name, NOT_A_TRIGGER.get(name, ()))


def pending_conditions(deps: Mapping[str, tuple[str, ...]], depth: int = 0) -> dict[str, dg.AutomationCondition]:
    """Per asset: its trigger fired, it has not been requested since and nothing bars it
    (a missing input, a failed blocking check), or that holds for a weekly input up to
    `depth` steps upstream of it: it will change once those have run. What is barred is
    not waited for (a broken week never holds the cross-week tables back).

    Why depth 0 by default: an input's trigger already sees its own inputs requested on the
    same tick (`any_deps_updated` includes `will_be_requested`), and a running input is
    `in_progress`; each nested level is evaluated on every tick once per path to it (at
    depth 1 the conditions had ~1,850 nodes and an evaluation took ~0.55 s on the demo's
    graph, at depth 0 ~40 % less), with the same runs in the time-travel tests and the demo.
    """
    def build(name: str, levels: int) -> dg.AutomationCondition:
        ready = trigger(name) & ~_missing(may_wait_for(name)) & AC.all_deps_blocking_checks_passed()
        if levels == 0:
            return ready
        upstream = [AC.any_deps_match(build(dep, levels - 1)).allow(dg.AssetSelection.assets(dep))
                    for dep in deps.get(name, ()) if dep in deps and dep in WEEKLY_INPUTS]
        return reduce(operator.or_, upstream, ready)

    return {name: build(name, depth) for name in deps}


def _settling(deps: tuple[str, ...], pending: Mapping[str, dg.AutomationCondition]) -> dg.AutomationCondition:
    """An input is running, or pending (about to change) in a later run: an input requested
    on this tick that can run in the same run (an unpartitioned table) runs before the
    asset in that run (`will_be_requested` is false across partitionings)."""
    return reduce(operator.or_, (AC.any_deps_match(pending[d] & ~AC.will_be_requested()).allow(
        dg.AssetSelection.assets(d)) for d in deps if d in pending), AC.any_deps_match(AC.in_progress()))


def refresh_when_inputs_change(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """`eager()` for every week, not only the latest: a late file or a correction for an
    old week refreshes that week. Waits for missing or running inputs and for the
    inputs' blocking checks; `ignore` names inputs that do not trigger it."""
    return (
        changed(ignore) & ~_missing(ignore) & ~AC.any_deps_in_progress() & ~AC.in_progress()
        & AC.all_deps_blocking_checks_passed()
    ).with_label("refresh when inputs change" + (f" (not {', '.join(ignore)})" if ignore else ""))


def refresh_cross_week(settling: dg.AutomationCondition) -> dg.AutomationCondition:
    """For tables that span weeks: refresh when any week's input changes, once the other
    cross-week inputs exist and none of its inputs is about to change again in a later run.
    Weeks never loaded are not waited for (they are simply not in the table yet)."""
    return (changed() & ~_missing(WEEKLY_INPUTS) & ~settling
            & ~AC.in_progress()).with_label("refresh when any week's input changes, once they have settled")


def ingest_newly_closed_week() -> dg.AutomationCondition:
    """A week is ingested once when it closes; files for older weeks come via the landing sensor."""
    return (newly_closed() & ~AC.in_progress()).with_label("ingest the week that just closed")


def build_once() -> dg.AutomationCondition:
    """Eval-set snapshots are immutable: built once, when the week's traces are in.
    Labels are read as of the week's end, so later label imports never trigger it."""
    ignored = NOT_A_TRIGGER["eval_set_snapshots"]
    return (not_built() & ~_missing(ignored) & ~AC.any_deps_in_progress() & ~AC.in_progress()
            ).with_label("build the week's snapshot once")


def report_when_settled(settling: dg.AutomationCondition) -> dg.AutomationCondition:
    """A week's report follows its own estimates, the latest week's also impact and health;
    never while a cross-week table it shows is about to change (it would be drawn twice)."""
    return (report_changed() & ~_missing(may_wait_for("weekly_report")) & ~settling
            & ~AC.any_deps_in_progress() & ~AC.in_progress()
            & AC.all_deps_blocking_checks_passed()).with_label(
        "refresh when the week's estimates change (the latest week: also impact and health), "
        "once the cross-week tables have settled")


def conditions(deps: Mapping[str, tuple[str, ...]]) -> dict[str, dg.AutomationCondition]:
    """Every asset's condition, given each asset's inputs (names) from the asset graph."""
    pending = pending_conditions(deps)
    out: dict[str, dg.AutomationCondition] = {
        "raw_traces": ingest_newly_closed_week(),
        "ingest_quarantine": ingest_newly_closed_week(),
        "automated_scores": refresh_when_inputs_change(),
        "annotation_queue": refresh_when_inputs_change(),
        "label_studio_tasks": refresh_when_inputs_change(),  # the queue pushed to Label Studio (when configured)
        "quality_estimates": refresh_when_inputs_change(ignore=NOT_A_TRIGGER["quality_estimates"]),
        "eval_set_snapshots": build_once(),
        "eval_set_manifests": build_once(),
        # The week's held-out cases re-answered by the live version: once the snapshot is in (cached: a re-run asks nothing).
        "heldout_replay": refresh_when_inputs_change(),
        # A week's report follows its own estimates; the latest week's also follows impact and health.
        "weekly_report": report_when_settled(_settling(CROSS_WEEK_INPUTS, pending)),
    }
    # Escalation labels come from raw_traces; label files come through the inbox sensor.
    for name in CROSS_WEEK:
        out[name] = refresh_cross_week(_settling(deps.get(name, ()), pending))
    return out


def with_conditions(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with the conditions above attached (shown in the UI's Automation tab)."""
    deps: dict[str, tuple[str, ...]] = {}
    for asset in assets:
        for spec in asset.specs:
            deps[spec.key.to_user_string()] = tuple(d.asset_key.to_user_string() for d in spec.deps)
    table = conditions({k: v for k, v in deps.items() if k in set(CROSS_WEEK) | set(WEEKLY_INPUTS)})
    return list(dg.map_asset_specs(
        lambda spec: spec.replace_attributes(
            automation_condition=table.get(spec.key.to_user_string(), spec.automation_condition)),
        assets,
    ))
