"""How the pipeline runs itself: automation conditions, sensors and alerts. Nothing here
computes a table; `definitions` attaches it all.

What triggers what (README has the diagram):
- a week closes                        -> raw_traces[W] (condition `ingest the week that just closed`)
- landing files new/changed/removed    -> landing_scan -> raw_traces[W] for exactly the weeks touched
- raw_traces[W] -> automated_scores[W] -> annotation_queue[W] -> quality_estimates[W] -> weekly_report[W]
- a label file in labels/inbox         -> human_labels -> quality_estimates[W] for the weeks whose labels
                                          changed; judge_calibration, impact_metrics, loop_health follow once settled
- raw_traces[W] (first time)           -> eval_set_snapshots[W] (built once, immutable)
- a failed run or blocking check       -> the alert webhook
"""

import dagster as dg

from feedback_pipeline.automation.alerts import alert_on_failure
from feedback_pipeline.automation.conditions import with_conditions
from feedback_pipeline.automation.label_studio_sensors import LABEL_STUDIO_SENSORS
from feedback_pipeline.automation.sensors import SENSORS

# Declarative automation is evaluated by this sensor; shipped on, every 15 s.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor", target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15,
)

ALL_SENSORS = [*SENSORS, *LABEL_STUDIO_SENSORS, automation_sensor, alert_on_failure]
__all__ = ["ALL_SENSORS", "with_conditions"]
