"""docs/helm/values.yaml, checked as far as this machine allows (no Helm offline): its shape
against the keys of Dagster's chart that it uses (a JSON Schema written from the chart's
templates, 1.13), the project's rules for a deployment, and the instance settings it
implies loaded by Dagster itself."""

from pathlib import Path

import dagster as dg
import jsonschema
import pytest
import yaml

VALUES = Path(__file__).resolve().parent.parent / "docs" / "helm" / "values.yaml"

_ENV_LIST = {"type": "array", "items": {"type": "object", "required": ["name", "value"],
                                        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                                        "additionalProperties": False}}
_SECRETS = {"type": "array", "minItems": 1,
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}
_VOLUMES = {"type": "array", "items": {"type": "object", "required": ["name"]}}
_MOUNTS = {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}}
SCHEMA = {
    "type": "object",
    "required": ["dagster-user-deployments", "runLauncher", "postgresql", "concurrency", "dagsterDaemon"],
    "properties": {
        "dagster-user-deployments": {
            "type": "object", "required": ["enabled", "deployments"],
            "properties": {"enabled": {"const": True}, "deployments": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "image", "dagsterApiGrpcArgs", "port"],
                "properties": {
                    "image": {"type": "object", "required": ["repository", "tag"]},
                    "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
                    "port": {"type": "integer"}, "envSecrets": _SECRETS, "env": _ENV_LIST,
                    "volumes": _VOLUMES, "volumeMounts": _MOUNTS}}}}},
        "runLauncher": {
            "type": "object", "required": ["type", "config"],
            "properties": {"type": {"const": "K8sRunLauncher"}, "config": {
                "type": "object", "required": ["k8sRunLauncher"], "additionalProperties": False,
                "properties": {"k8sRunLauncher": {"type": "object", "properties": {
                    "envSecrets": _SECRETS, "volumes": _VOLUMES, "volumeMounts": _MOUNTS,
                    "envVars": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*=.*$"}},
                    "loadInclusterConfig": {"type": "boolean"}, "imagePullPolicy": {"type": "string"}}}}}}},
        "postgresql": {"type": "object", "required": ["enabled", "postgresqlHost"],
                       "properties": {"enabled": {"const": False}}},
        "concurrency": {"type": "object", "additionalProperties": False, "properties": {
            "pools": {"type": "object", "additionalProperties": False,
                      "properties": {"defaultLimit": {"type": "integer", "minimum": 1},
                                     "granularity": {"enum": ["op", "run"]},
                                     "opGranularityRunBuffer": {"type": "integer"}}},
            "runs": {"type": "object", "additionalProperties": False,
                     "properties": {"maxConcurrentRuns": {"type": "integer"},
                                    "tagConcurrencyLimits": {"type": "array"}}}}},
        "dagsterDaemon": {"type": "object", "properties": {
            "runCoordinator": {"type": "object", "properties": {"type": {"const": "QueuedRunCoordinator"}}},
            "runMonitoring": {"type": "object", "properties": {
                "enabled": {"type": "boolean"}, "maxRuntimeSeconds": {"type": "integer"},
                "freeSlotsAfterRunEndSeconds": {"type": "integer"}}}}},
    },
}


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_the_values_have_the_chart_shape(values):
    jsonschema.validate(values, SCHEMA)


def test_no_secret_is_written_in_the_values(values):
    text = VALUES.read_text()
    for needle in ("password=", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY=", "FEEDBACK_PIPELINE_WAREHOUSE="):
        assert needle not in text, f"{needle} must come from a Secret"
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert "FEEDBACK_PIPELINE_WAREHOUSE" not in {e["name"] for e in deployment["env"]}


def test_run_pods_see_what_the_code_location_sees(values):
    """The code location and every run pod name the same home, lake data path and writers."""
    [deployment] = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {e["name"]: e["value"] for e in deployment["env"]} == dict(v.split("=", 1) for v in launcher["envVars"])
    assert deployment["envSecrets"] == launcher["envSecrets"]
    assert deployment["volumes"] == launcher["volumes"] and deployment["volumeMounts"] == launcher["volumeMounts"]


def test_the_code_location_loads(values):
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[0] == "-m"
    module = __import__(args[1], fromlist=["defs"])
    assert isinstance(module.defs, dg.Definitions)


def test_the_instance_settings_load_in_dagster(values, tmp_path):
    """The chart renders these values into dagster.yaml (its _concurrency.tpl and daemon
    templates); the same settings, in dagster.yaml's own keys, load as an instance."""
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    config = {
        "concurrency": {"pools": {"default_limit": pools["defaultLimit"]},
                        "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"]}},
        "run_monitoring": {"enabled": monitoring["enabled"], "max_runtime_seconds": monitoring["maxRuntimeSeconds"],
                           "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"]},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
