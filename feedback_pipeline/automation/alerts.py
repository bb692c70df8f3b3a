"""Failures reach a person: a failed run (a failed blocking check fails its run too) posts a
short Slack-compatible message to `FEEDBACK_PIPELINE_ALERT_WEBHOOK_URL`.

The URL is a secret (it carries the token): it is read from the environment at tick
time and never logged or put in metadata. Unset, the sensor does nothing.
"""

from __future__ import annotations

import json
import os
import urllib.request

import dagster as dg

WEBHOOK_ENV = "FEEDBACK_PIPELINE_ALERT_WEBHOOK_URL"


def failure_message(run: dg.DagsterRun, failed_checks: list[str], error: str | None) -> str:
    """One paragraph a person can act on: what failed, which week, where to look."""
    partition = run.tags.get("dagster/partition")
    what = f"run {run.run_id[:8]} ({run.job_name}{f', week {partition}' if partition else ''}) failed"
    if failed_checks:
        what += f"; failed blocking check(s): {', '.join(sorted(failed_checks))}"
    if error:
        what += f"; error: {error.strip().splitlines()[0][:300]}"
    return f":rotating_light: feedback_pipeline: {what}. Open the run in the Dagster UI (Runs → {run.run_id})."


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """`asset/check` names of the checks that failed in the run."""
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    out = []
    for record in records:
        evaluation = record.dagster_event.event_specific_data
        if not evaluation.passed:
            out.append(f"{evaluation.asset_key.to_user_string()}/{evaluation.check_name}")
    return out


def post(url: str, text: str, timeout_s: float = 10.0) -> None:
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (URL from the operator)
        response.read()


@dg.run_failure_sensor(name="alert_on_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False, minimum_interval_seconds=30)
def alert_on_failure(context: dg.RunFailureSensorContext):
    """Post every failed run, with its failed checks, to the alert webhook."""
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return dg.SkipReason(f"{WEBHOOK_ENV} is not set")
    error = context.failure_event.message if context.failure_event else None
    text = failure_message(context.dagster_run, failed_checks(context.instance, context.dagster_run.run_id), error)
    try:
        post(url, text)
    except OSError as exc:  # the message names no URL: it is a secret
        raise RuntimeError(f"could not post the failure alert to the webhook ({type(exc).__name__})") from None
    context.log.info("failure alert posted")
