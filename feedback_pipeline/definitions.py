"""Gathers every stage's assets and checks, the resources and the automation into Definitions."""

from typing import Any, Mapping

import dagster as dg

from feedback_pipeline.automation import ALL_SENSORS, with_conditions
from feedback_pipeline.estimates import assets as estimates_assets
from feedback_pipeline.evalset import assets as evalset_assets
from feedback_pipeline.impact import assets as impact_assets
from feedback_pipeline.impact.replay import AgentReplayResource
from feedback_pipeline.ingest import assets as ingest_assets
from feedback_pipeline.label_studio_api import LabelStudioResource
from feedback_pipeline.labels import assets as labels_assets
from feedback_pipeline.partitions import weekly
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.sampling import assets as sampling_assets
from feedback_pipeline.scoring import assets as scoring_assets
from feedback_pipeline.scoring.judge import JudgeResource

STAGES = [ingest_assets, scoring_assets, sampling_assets, labels_assets, estimates_assets, evalset_assets,
          impact_assets]

ASSETS = with_conditions(dg.load_assets_from_modules(STAGES))
ASSET_CHECKS = dg.load_asset_checks_from_modules(STAGES)

# The one weekly selection: every asset partitioned by week; the rest spans weeks.
WEEKLY_SELECTION = dg.AssetSelection.assets(*[k for a in ASSETS if a.partitions_def is not None for k in a.keys])
UNPARTITIONED_SELECTION = dg.AssetSelection.assets(*[k for a in ASSETS if a.partitions_def is None for k in a.keys])
# A week's snapshot grows the last week's: the eval set and what is built on it go week after
# week; the rest of a week reads no other week of its tables (a backfill runs those in parallel).
WEEK_CHAINED_SELECTION = dg.AssetSelection.assets("eval_set_snapshots").downstream() & WEEKLY_SELECTION

weekly_refresh = dg.define_asset_job(
    "weekly_refresh", selection=WEEKLY_SELECTION, partitions_def=weekly,
    description="A week end to end, for backfills from the UI or `feedback-pipeline run`; "
                "day to day, automation refreshes only what changed.",
    tags={"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"},
)


def default_resources() -> dict[str, Any]:
    return {"home": FeedbackHome(), "judge": JudgeResource.from_env(),
            "agent": AgentReplayResource.from_env(), "label_studio": LabelStudioResource()}


def build_defs(resource_overrides: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The project's Definitions; tests pass `resource_overrides` instead of patching."""
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[weekly_refresh],
        sensors=ALL_SENSORS,
        # Every writer queues for the one warehouse slot, so a run's steps are sequential
        # anyway: one process per run, not one per step (each would re-import the code).
        executor=dg.in_process_executor,
        resources={**default_resources(), **(resource_overrides or {})},
    )


defs = build_defs()
