"""Gathers every stage's assets, checks, resources and automation into Definitions."""

from typing import Any, Mapping

import dagster as dg

from feedback_pipeline import automation
from feedback_pipeline.estimates import assets as estimates_assets
from feedback_pipeline.evalset import assets as evalset_assets
from feedback_pipeline.impact import assets as impact_assets
from feedback_pipeline.impact.replay import AgentReplayResource
from feedback_pipeline.ingest import assets as ingest_assets
from feedback_pipeline.labels import assets as labels_assets
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.sampling import assets as sampling_assets
from feedback_pipeline.scoring import assets as scoring_assets
from feedback_pipeline.scoring.judge import JudgeResource

STAGES = [ingest_assets, scoring_assets, sampling_assets, labels_assets, estimates_assets, evalset_assets,
          impact_assets]

ASSETS = [a for m in STAGES for a in dg.load_assets_from_modules([m])]
ASSET_CHECKS = [c for m in STAGES for c in dg.load_asset_checks_from_modules([m])]


# The weekly refresh: everything partitioned by week.
WEEKLY_SELECTION = dg.AssetSelection.assets(*[
    key for a in ASSETS if a.partitions_def is not None for key in a.keys
])


UNPARTITIONED_SELECTION = dg.AssetSelection.assets(*[
    key for a in ASSETS if a.partitions_def is None for key in a.keys
])


def default_resources() -> dict[str, Any]:
    return {"home": FeedbackHome(), "judge": JudgeResource.from_env(),
            "agent": AgentReplayResource.from_env()}


def build_defs(resource_overrides: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The project's Definitions; tests pass `resource_overrides` instead of patching."""
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=ASSET_CHECKS,
        jobs=[automation.weekly_refresh, automation.import_labels, automation.refresh_cross_week],
        schedules=[automation.weekly_schedule, automation.cross_week_schedule],
        sensors=[automation.label_inbox_sensor, automation.landing_sensor],
        resources={**default_resources(), **(resource_overrides or {})},
    )


defs = build_defs()
