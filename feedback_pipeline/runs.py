"""In-process runs on the Dagster instance in $DAGSTER_HOME (so they show in the UI): the
CLI's explicit runs, and the daemon's loop (sensors + automation conditions) run in this
process for the demo and the tests. Launching only; what to run when is `automation`'s,
what a run computes is the assets'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg

# The terminal shows warnings and errors; the full event log is in the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def current_instance() -> dg.DagsterInstance:
    """The instance in $DAGSTER_HOME, else a throwaway one."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def materialize_weeks(weeks: list[str], resources: dict | None = None, selection=None,
                      instance: dg.DagsterInstance | None = None,
                      run_config: dict | None = None) -> list[dg.ExecuteInProcessResult]:
    """Materialize the weekly assets (and their checks) for each week, in order."""
    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, WEEKLY_SELECTION, default_resources

    instance = instance or current_instance()
    results = []
    for week in weeks:
        result = dg.materialize(
            ASSETS + ASSET_CHECKS,
            selection=selection or WEEKLY_SELECTION,
            partition_key=week,
            resources={**default_resources(), **(resources or {})},
            instance=instance,
            raise_on_error=False,
            run_config={**QUIET, **(run_config or {})},
        )
        if not result.success:
            raise SystemExit(f"week {week}: run {result.run_id} failed; see the run log in the UI (make ui)")
        results.append(result)
    return results


def materialize_unpartitioned(resources: dict | None = None, selection=None,
                              instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Materialize the assets that are not partitioned by week (labels, calibration, ...)."""
    from feedback_pipeline.definitions import ASSET_CHECKS, ASSETS, UNPARTITIONED_SELECTION, default_resources

    result = dg.materialize(
        ASSETS + ASSET_CHECKS,
        selection=selection or UNPARTITIONED_SELECTION,
        resources={**default_resources(), **(resources or {})},
        instance=instance or current_instance(),
        raise_on_error=False,
        run_config=QUIET,
    )
    if not result.success:
        raise SystemExit(f"run {result.run_id} failed; see the run log in the UI (make ui)")
    return result


@dataclass
class AutomationTicker:
    """What the Dagster daemon does, in this process: evaluate the sensors and the automation
    conditions at a given time, and launch the runs they request, tick after tick.

    The demo drives the pipeline through it (so it shows what production does) and tests
    use it to step automation through simulated time. Run keys deduplicate as the daemon's do.
    """

    defs: dg.Definitions
    instance: dg.DagsterInstance
    run_config: dict[str, dict] = field(default_factory=dict)  # op name -> its config, as a deployment sets it
    cursors: dict[str, str | None] = field(default_factory=dict)
    automation_cursor: object = None
    run_keys: set[str] = field(default_factory=set)
    launched: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)  # (why, week, assets)

    def tick(self, evaluation_time: datetime | None = None) -> int:
        """One round of sensors, then one automation evaluation; returns the runs launched."""
        if self.automation_cursor is None:
            # As when the daemon starts: its first evaluation only records the state
            # (Dagster treats everything as handled then), later ones react to changes.
            self.automation_cursor = dg.evaluate_automation_conditions(
                defs=self.defs, instance=self.instance, evaluation_time=evaluation_time).cursor
        launched = 0
        for sensor in self.defs.sensors or []:
            if isinstance(sensor, (dg.AutomationConditionSensorDefinition, dg.RunStatusSensorDefinition)):
                continue
            context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(sensor.name),
                                              resources=self.defs.resources, definitions=self.defs)
            data = sensor.evaluate_tick(context)
            self.cursors[sensor.name] = data.cursor
            for request in data.run_requests or []:
                if request.run_key in self.run_keys:
                    continue
                self.run_keys.add(request.run_key)
                self._launch(sensor.name, request.partition_key, request.asset_selection, request.tags)
                launched += 1
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                   cursor=self.automation_cursor, evaluation_time=evaluation_time)
        self.automation_cursor = result.cursor
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for key in self.defs.resolve_asset_graph().get_all_asset_keys():
            for partition in result.get_requested_partitions(key):
                by_partition.setdefault(partition, []).append(key)
        for partition in sorted(by_partition, key=lambda p: (p is None, p or "")):
            self._launch("automation", partition, by_partition[partition], {})
            launched += 1
        return launched

    def run_until_quiet(self, evaluation_time: datetime | None = None, max_ticks: int = 30) -> int:
        """Tick until nothing more is requested; returns the runs launched."""
        total = 0
        for _ in range(max_ticks):
            launched = self.tick(evaluation_time)
            total += launched
            if not launched:
                return total
        raise RuntimeError(f"automation still requesting runs after {max_ticks} ticks: {self.launched[-5:]}")

    def _launch(self, why: str, partition: str | None, keys, tags) -> dg.ExecuteInProcessResult:
        keys = list(keys)
        names = {k.to_user_string() for k in keys}
        config = {op: cfg for op, cfg in self.run_config.items() if op in names}
        result = dg.materialize(
            [*self.defs.assets, *(self.defs.asset_checks or [])],
            selection=dg.AssetSelection.assets(*keys),
            partition_key=partition, instance=self.instance, resources=self.defs.resources,
            raise_on_error=False, tags={**(tags or {}), "feedback_pipeline/launched_by": why},
            run_config={**QUIET, **({"ops": config} if config else {})},
        )
        self.launched.append((why, partition, tuple(sorted(names))))
        if not result.success:
            raise SystemExit(f"{why} run for {partition or 'all weeks'} ({', '.join(sorted(names))}) failed: "
                             f"run {result.run_id}; see the run log in the UI (make ui)")
        return result
