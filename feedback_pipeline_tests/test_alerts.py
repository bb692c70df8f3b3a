"""Failures reach a person: a failed run (here: a failed blocking check) posts to a loopback webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from feedback_pipeline.automation.alerts import WEBHOOK_ENV, alert_on_failure, failed_checks, failure_message

SECRET_URL_PART = "T000/B000/very-secret-token"


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "json": json.loads(body),
                             "type": self.headers["Content-Type"]})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/services/{SECRET_URL_PART}", received
    server.shutdown()


@dg.asset
def scores():
    return 1


@dg.asset_check(asset=scores, blocking=True, name="schema_matches")
def scores_schema():
    return dg.AssetCheckResult(passed=False, metadata={"failures": 3})


def test_a_failed_blocking_check_posts_one_message_naming_it(webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv(WEBHOOK_ENV, url)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([scores, scores_schema], instance=instance, raise_on_error=False,
                            partition_key=None)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_failure", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event()).for_run_failure()
    alert_on_failure(context)
    assert len(received) == 1
    text = received[0]["json"]["text"]
    assert received[0]["type"] == "application/json"
    assert "scores/schema_matches" in text and result.run_id in text
    assert SECRET_URL_PART not in text  # the webhook's secret never travels in the message


def test_without_a_webhook_nothing_is_posted(webhook, monkeypatch):
    _, received = webhook
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([scores, scores_schema], instance=instance, raise_on_error=False)
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_failure", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event()).for_run_failure()
    alert_on_failure(context)
    assert received == []


def test_message_names_the_week_and_the_check():
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([scores, scores_schema], instance=instance, raise_on_error=False,
                            tags={"dagster/partition": "2026-11-16"})
    text = failure_message(result.dagster_run, failed_checks(instance, result.run_id), "boom\ntrace")
    assert "week 2026-11-16" in text and "scores/schema_matches" in text and "error: boom" in text
    assert "trace" not in text  # only the first line of the error
