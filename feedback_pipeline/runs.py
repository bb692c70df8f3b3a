"""In-process runs on the Dagster instance in $DAGSTER_HOME (so they show in the UI):
what the CLI and the demo call to materialize weeks. Launching only; what to run
when is `automation`'s, what a run computes is the assets'.
"""

from __future__ import annotations

import os

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
