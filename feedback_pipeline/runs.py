"""In-process runs on the Dagster instance in $DAGSTER_HOME (so they show in the UI): the
CLI's explicit runs, and the daemon's loop (sensors + automation conditions) run in this
process for the demo and the tests. Launching only; what to run when is `automation`'s,
what a run computes is the assets'.
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
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


def backfill_weeks(weeks: list[str], writers: int, instance: dg.DagsterInstance | None = None) -> None:
    """Materialize the weekly assets of `weeks` with `writers` weeks written at once: the
    assets that read no other week of their tables run one run per week in `writers` worker
    processes (as pods would), then the week-chained ones (the eval set and what reads it)
    week by week. Needs a warehouse that admits several writers (a DuckLake on PostgreSQL)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from feedback_pipeline.definitions import WEEK_CHAINED_SELECTION, WEEKLY_SELECTION
    from feedback_pipeline.resources import FeedbackHome

    if writers > 1 and not FeedbackHome().warehouse_location.multi_writer:
        raise SystemExit(f"--writers {writers}: the warehouse {FeedbackHome().warehouse_location.describe()} "
                         "admits one writing process; set FEEDBACK_PIPELINE_WAREHOUSE=ducklake:postgres:<conninfo> "
                         "(docs/scaling.md) or use --writers 1")
    instance = instance or current_instance()
    set_pool_limits(instance, writers)
    with FeedbackHome().warehouse():  # a new lake's catalog is made once, here, not by racing workers
        pass
    parallel = WEEKLY_SELECTION - WEEK_CHAINED_SELECTION
    # The first week alone: its ingest indexes every landing file (the manifest), so each
    # later week reads only its own files instead of every writer parsing them all.
    materialize_weeks(weeks[:1], selection=parallel, instance=instance)
    if writers <= 1:
        materialize_weeks(weeks[1:], selection=parallel, instance=instance)
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, like a pod
        with ProcessPoolExecutor(max_workers=writers, mp_context=context) as workers:
            for week, run_id in zip(weeks[1:], workers.map(_materialize_one_week, weeks[1:])):
                print(f"week {week}: run {run_id}")
    materialize_weeks(weeks, selection=WEEK_CHAINED_SELECTION, instance=instance)


def set_pool_limits(instance: dg.DagsterInstance, writers: int) -> None:
    """`warehouse` admits `writers` steps at once; `warehouse_serial` (a lake's cross-week
    tables and the eval set) stays at one. On the DuckDB file both are the one pool, at 1."""
    from feedback_pipeline import pools

    instance.event_log_storage.set_concurrency_slots(pools.WEEKLY, max(1, writers))
    if pools.SERIAL != pools.WEEKLY:
        instance.event_log_storage.set_concurrency_slots(pools.SERIAL, 1)


def _materialize_one_week(week: str) -> str:
    from feedback_pipeline.definitions import WEEK_CHAINED_SELECTION, WEEKLY_SELECTION

    [result] = materialize_weeks([week], selection=WEEKLY_SELECTION - WEEK_CHAINED_SELECTION)
    return result.run_id


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
            self.automation_cursor = self._evaluate(evaluation_time, cursor=None).cursor
        launched = 0
        for sensor in self.defs.sensors or []:
            if isinstance(sensor, (dg.AutomationConditionSensorDefinition, dg.RunStatusSensorDefinition)):
                continue
            context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(sensor.name),
                                              resources=self._sensor_resources(sensor), definitions=self.defs)
            data = sensor.evaluate_tick(context)
            self.cursors[sensor.name] = data.cursor
            for request in data.run_requests or []:
                if request.run_key in self.run_keys:
                    continue
                self.run_keys.add(request.run_key)
                self._launch(sensor.name, request.partition_key, request.asset_selection, request.tags)
                launched += 1
        result = self._evaluate(evaluation_time, cursor=self.automation_cursor)
        self.automation_cursor = result.cursor
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for key in self.defs.resolve_asset_graph().get_all_asset_keys():
            for partition in result.get_requested_partitions(key):
                by_partition.setdefault(partition, []).append(key)
        for partition in sorted(by_partition, key=lambda p: (p is None, p or "")):
            self._launch("automation", partition, by_partition[partition], {})
            launched += 1
        return launched

    def _sensor_resources(self, sensor: dg.SensorDefinition) -> dict:
        """The resources the sensor asks for (and theirs), as the daemon's code server builds:
        not every resource of the code location on every tick."""
        from dagster._core.execution.resources_init import get_transitive_required_resource_keys

        resources = self.defs.get_repository_def().get_top_level_resources()
        wanted = get_transitive_required_resource_keys(sensor.required_resource_keys, resources)
        return {k: v for k, v in resources.items() if k in wanted}

    def _evaluate(self, evaluation_time: datetime | None, cursor):
        """Dagster's `evaluate_automation_conditions`, without the JSON round trip of the
        cursor it adds on every call to imitate the daemon's storage (~0.1 s a tick; the
        ticker keeps the cursor in memory). The same evaluator, entities and new cursor."""
        import logging

        from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
        from dagster._core.definitions.declarative_automation.automation_condition_evaluator import (
            AutomationConditionEvaluator,
        )
        from dagster._core.definitions.declarative_automation.automation_condition_tester import (
            EvaluateAutomationConditionsResult,
        )
        from dagster._core.definitions.partitions.context import partition_loading_context

        graph = self.defs.resolve_asset_graph()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)  # include_sources is beta; the daemon's selection too
            selection = dg.AssetSelection.all(include_sources=True) | dg.AssetSelection.all_asset_checks()
        cursor = cursor or AssetDaemonCursor.empty()
        evaluator = AutomationConditionEvaluator(
            asset_graph=graph, instance=self.instance,
            entity_keys={key for key in selection.resolve(graph) | selection.resolve_checks(graph)
                         if graph.get(key).automation_condition is not None} | graph.automatable_asset_job_keys,
            evaluation_time=evaluation_time, emit_backfills=False, logger=logging.getLogger("dagster.automation"),
            cursor=cursor, evaluation_id=cursor.evaluation_id)
        results, requested = evaluator.evaluate()
        with partition_loading_context(effective_dt=evaluation_time, dynamic_partitions_store=self.instance) as ctx:
            new_cursor = cursor.with_updates(
                evaluation_timestamp=(evaluation_time or datetime.now()).timestamp(),
                newly_observe_requested_asset_keys=[], evaluation_id=cursor.evaluation_id + 1,
                condition_cursors=[r.get_new_cursor() for r in results], asset_graph=graph)
            return EvaluateAutomationConditionsResult(cursor=new_cursor, requested_subsets=requested,
                                                      results=results, partition_loading_context=ctx)

    def run_until_quiet(self, evaluation_time: datetime | None = None, max_ticks: int = 30) -> int:
        """Tick until nothing more is requested; returns the runs launched. Every run is in
        this process meanwhile, so it holds the warehouse open (`hold_open`) until then."""
        from feedback_pipeline.warehouse_location import hold_open

        home = (self.defs.resources or {}).get("home")
        total = 0
        with hold_open(home.warehouse_location) if home is not None else nullcontext():
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
