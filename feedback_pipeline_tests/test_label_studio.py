"""Label Studio round trip against a real server (its own venv, `make label-studio`).

The week lands, automation pushes its queue into one project per agent; an annotator
labels tasks through the REST API; the sensor pulls them into human_labels and the
week's estimates refresh. Then: re-push adds nothing, an updated annotation supersedes,
a choice outside the rubric and a skipped task are quarantined with their reason, and
a server stopped in the middle of a pull loses and duplicates nothing.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from feedback_pipeline.definitions import build_defs
from feedback_pipeline.demo.run import deliver_week_files
from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
from feedback_pipeline.label_studio_api import (KEY_ENV, LabelStudioClient, LabelStudioResource,
                                                LabelStudioUnavailable, is_personal_access_token)
from feedback_pipeline.labels.label_studio_sync import project_title
from feedback_pipeline.resources import FeedbackHome
from feedback_pipeline.runs import AutomationTicker
from feedback_pipeline.weeks import week_end, week_start
from feedback_pipeline_tests.conftest import run_resources
from feedback_pipeline_tests.label_studio_server import (LS_BIN, TOKEN, USER, server_from_template,
                                                         template_data_dir)

pytestmark = pytest.mark.skipif(not LS_BIN.exists(), reason="no .venv-labelstudio: run `make label-studio`")

WEEK = DEMO_FIRST_WEEK.isoformat()
MONDAY = week_end(WEEK) + timedelta(hours=1)


@pytest.fixture(scope="session")
def ls_template():
    return template_data_dir()


def _ann(verdict: str | None, category: str | None = None) -> dict:
    result = []
    if verdict:
        result.append({"from_name": "verdict", "to_name": "agent_response", "type": "choices",
                       "value": {"choices": [verdict]}})
    if category:
        result.append({"from_name": "failure_category", "to_name": "agent_response", "type": "choices",
                       "value": {"choices": [category]}})
    return {"result": result}


def _sql(home: FeedbackHome, query: str) -> pl.DataFrame:
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        return con.execute(query).pl()


def _tasks(client: LabelStudioClient, title: str) -> list[dict]:
    project = next(p for p in client.projects() if p["title"] == title)
    return sorted(client.export(project["id"], all_tasks=True), key=lambda t: t["data"]["queue_position"])


@pytest.fixture(scope="module")
def world(tmp_path_factory, ls_template):
    root = tmp_path_factory.mktemp("ls_world")
    server = server_from_template(ls_template, root)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, TOKEN)
        env.setenv("LABEL_STUDIO_URL", server.url)  # the push assets read it at run time
        home = FeedbackHome(path=str(root / "home"))
        generate_world(root / "world", seed=5, weeks=1, turns_per_week=1500)
        resource = LabelStudioResource(url=server.url)
        ticker = AutomationTicker(defs=build_defs({**run_resources(home), "label_studio": resource}),
                                  instance=dg.DagsterInstance.ephemeral())
        ticker.run_until_quiet(week_start(WEEK))
        deliver_week_files(root / "world", home.landing, WEEK)
        ticker.run_until_quiet(MONDAY)
        client = resource.client()
        try:
            yield {"home": home, "server": server, "ticker": ticker, "client": client, "resource": resource}
        finally:
            client.close()
            server.stop()


def test_the_queue_is_pushed_one_project_per_agent_in_queue_order(world):
    home, client = world["home"], world["client"]
    queue = _sql(home, "SELECT * FROM annotation_queue ORDER BY agent_id, queue_position")
    titles = {p["title"] for p in client.projects()}
    assert titles == {project_title(a, "v1") for a in queue["agent_id"].unique()}
    assert "refunds · agent_quality v1" in titles
    exported = json.loads((home.exports / "annotation_queue" / WEEK / "label_studio_tasks.json").read_text())
    for agent in queue["agent_id"].unique():
        tasks = _tasks(client, project_title(agent, "v1"))
        mine = queue.filter(pl.col("agent_id") == agent)
        assert [t["data"]["trace_id"] for t in tasks] == mine["trace_id"].to_list()
        assert [t["meta"] for t in tasks] == [{"stratum": s, "queue_position": p} for s, p in
                                              zip(mine["stratum"], mine["queue_position"])]
        # The same (PII-redacted) data as the file export.
        assert [t["data"] for t in tasks] == [t["data"] for t in exported if t["data"]["agent_id"] == agent]


def test_repushing_the_week_adds_no_task(world):
    ticker, client = world["ticker"], world["client"]
    before = {p["title"]: p["task_number"] for p in client.projects()}
    result = ticker._launch("test", WEEK, [dg.AssetKey("label_studio_tasks")], {})
    meta = result.asset_materializations_for_node("label_studio_tasks")[0].metadata
    assert meta["tasks_pushed"].value == 0 and meta["projects_created"].value == 0
    assert meta["tasks_already_there"].value == sum(before.values())
    assert {p["title"]: p["task_number"] for p in client.projects()} == before


def test_a_task_whose_trace_left_the_queue_is_reported_not_deleted(world):
    ticker, client = world["ticker"], world["client"]
    project = next(p for p in client.projects() if p["title"] == "refunds · agent_quality v1")
    gone = {"trace_id": "drawn-before-the-rerun", "week": WEEK, "rubric_version": "v1", "agent_id": "refunds",
            "queue_position": 10_000, "user_message": "", "context": "", "agent_response": "", "label_source": "annotation"}
    client.import_tasks(project["id"], [{"data": gone}])
    result = ticker._launch("test", WEEK, [dg.AssetKey("label_studio_tasks")], {})
    meta = result.asset_materializations_for_node("label_studio_tasks")[0].metadata
    assert meta["stale_tasks"].value == 1 and "drawn-before-the-rerun" in meta["stale"].value
    assert any(t["data"]["trace_id"] == "drawn-before-the-rerun" for t in client.export(project["id"], all_tasks=True))


@pytest.fixture(scope="module")
def annotated(world):
    """The annotator's day: 6 labels, one choice outside the rubric, one skipped task; then the sensor."""
    home, ticker, client = world["home"], world["ticker"], world["client"]
    tasks = _tasks(client, "refunds · agent_quality v1")
    given = [("pass", None), ("fail", "wrong_information"), ("pass", None), ("fail", "tool_failed"),
             ("pass", None), ("pass", None)]
    anns = [client.call("POST", f"/api/tasks/{t['id']}/annotations/", _ann(*g)) for t, g in zip(tasks, given)]
    bad = client.call("POST", f"/api/tasks/{tasks[6]['id']}/annotations/", _ann("fail", "made_up_category"))
    skipped = client.call("POST", f"/api/tasks/{tasks[7]['id']}/annotations/", {"result": [], "was_cancelled": True})
    started = time.monotonic()
    n = len(ticker.launched)
    ticker.run_until_quiet(MONDAY + timedelta(days=2))
    round_trip_s = time.monotonic() - started
    return {"tasks": tasks, "anns": anns, "bad": bad, "skipped": skipped, "launched": ticker.launched[n:],
            "round_trip_s": round_trip_s}


def test_annotations_come_back_as_labels_and_refresh_the_weeks_estimates(world, annotated):
    home, tasks = world["home"], annotated["tasks"]
    labels = _sql(home, "SELECT * FROM human_labels WHERE source = 'annotation' ORDER BY trace_id")
    assert labels.height == 6
    assert set(labels["trace_id"]) == {t["data"]["trace_id"] for t in tasks[:6]}
    assert set(labels["annotator_id"]) == {USER}
    assert labels.filter(pl.col("trace_id") == tasks[1]["data"]["trace_id"])["failure_category"].item() == "wrong_information"
    assert labels["source_file"].str.starts_with("label_studio/project-").all()
    assert (WEEK, ("quality_estimates",)) in [(w, a) for _, w, a in annotated["launched"]]
    n_labeled = _sql(home, f"SELECT sum(n_labeled) AS n FROM quality_estimates WHERE week = '{WEEK}' "
                           "AND metric = 'failure_rate' AND method = 'hajek' AND agent_id = 'refunds'")["n"].item()
    assert n_labeled == 6
    print(f"annotation -> quality_estimates: {annotated['round_trip_s']:.1f} s of runs")


def test_a_choice_outside_the_rubric_and_a_skipped_task_are_quarantined_with_the_reason(world, annotated):
    quarantine = _sql(world["home"], "SELECT * FROM label_quarantine")
    bad = quarantine.filter(pl.col("trace_id") == annotated["tasks"][6]["data"]["trace_id"])
    assert bad.height == 1 and "made_up_category" in bad["reason"].item()
    skipped = quarantine.filter(pl.col("trace_id") == annotated["tasks"][7]["data"]["trace_id"])
    assert skipped.height == 1 and "skipped" in skipped["reason"].item()


def test_a_quiet_tick_pulls_nothing_again(world, annotated):
    ticker = world["ticker"]
    assert ticker.run_until_quiet(MONDAY + timedelta(days=2, hours=1)) == 0
    assert ticker.cursors["label_studio_sensor"] and json.loads(ticker.cursors["label_studio_sensor"])["pending"] == {}
    assert _sql(world["home"], "SELECT count(*) AS n FROM human_labels WHERE source = 'annotation'")["n"].item() == 6


def test_an_updated_annotation_supersedes_the_earlier_label(world, annotated):
    home, ticker, client = world["home"], world["ticker"], world["client"]
    first = annotated["anns"][0]
    client.call("PATCH", f"/api/annotations/{first['id']}/", _ann("fail", "tool_failed"))
    ticker.run_until_quiet(MONDAY + timedelta(days=3))
    trace = annotated["tasks"][0]["data"]["trace_id"]
    rows = _sql(home, f"SELECT verdict, is_current FROM human_labels WHERE trace_id = '{trace}' "
                      "AND source = 'annotation' ORDER BY labeled_at")
    assert rows.rows() == [("pass", False), ("fail", True)]
    assert _sql(home, "SELECT count(*) AS n FROM human_labels WHERE source = 'annotation' AND is_current")["n"].item() == 6


def test_a_disagreement_goes_to_the_adjudication_project_and_comes_back_as_adjudication(world, annotated):
    home, ticker, client = world["home"], world["ticker"], world["client"]
    bob = client.call("POST", "/api/users/", {"email": "bob@example.com", "username": "bob", "password": "bob-pass-123"})
    task = annotated["tasks"][2]  # the admin said pass; bob says fail
    client.call("POST", f"/api/tasks/{task['id']}/annotations/", {**_ann("fail", "tool_failed"), "completed_by": bob["id"]})
    ticker.run_until_quiet(MONDAY + timedelta(days=3, hours=1))
    title = "refunds · agent_quality v1 · adjudication"
    adjudication = _tasks(client, title)
    assert [t["data"]["trace_id"] for t in adjudication] == [task["data"]["trace_id"]]
    assert adjudication[0]["data"]["label_source"] == "adjudication"
    client.call("POST", f"/api/tasks/{adjudication[0]['id']}/annotations/", _ann("fail", "tool_failed"))
    ticker.run_until_quiet(MONDAY + timedelta(days=3, hours=2))
    rows = _sql(home, f"SELECT source, annotator_id, verdict FROM human_labels WHERE is_current "
                      f"AND trace_id = '{task['data']['trace_id']}' AND source <> 'escalation' ORDER BY source, annotator_id")
    assert rows.rows() == [("adjudication", USER, "fail"), ("annotation", USER, "pass"),
                           ("annotation", rows["annotator_id"][2], "fail")]
    assert rows["annotator_id"][2] in ("bob@example.com", f"label_studio_user:{bob['id']}")
    assert len(_tasks(client, title)) == 1  # re-pushing after the adjudication adds nothing


def test_the_key_is_in_no_table_log_or_metadata(world, annotated):
    ticker, home = world["ticker"], world["home"]
    with duckdb.connect(str(home.warehouse_path), read_only=True) as con:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            text = str(con.execute(f"SELECT * FROM {table}").fetchall())
            assert TOKEN not in text, table
    runs = ticker.instance.get_runs()
    assert runs
    for run in runs:
        assert TOKEN not in "".join(str(entry) for entry in ticker.instance.all_logs(run.run_id))
    assert TOKEN not in "".join(p.read_text() for p in home.labels_inbox.rglob("*.json"))


def test_a_personal_access_token_is_exchanged_for_a_bearer_access_token(world):
    client = world["client"]
    pat = client.call("POST", "/api/token/")["token"]
    assert is_personal_access_token(pat) and not is_personal_access_token(TOKEN)
    bearer = LabelStudioClient(world["server"].url, pat)
    try:
        assert bearer.call("GET", "/api/current-user/whoami")["email"] == USER
        assert bearer._auth_header().startswith("Bearer ") and pat not in bearer._auth_header()
    finally:
        bearer.close()


def test_a_server_stopped_mid_pull_loses_and_duplicates_nothing(world, annotated, monkeypatch):
    home, ticker, client, server = world["home"], world["ticker"], world["client"], world["server"]
    before = _sql(home, "SELECT count(*) AS n FROM human_labels WHERE source = 'annotation'")["n"].item()
    agents = sorted(p["title"] for p in client.projects()
                    if p["title"] != "refunds · agent_quality v1" and not p["title"].endswith("adjudication"))[:2]
    for title in agents:  # two more projects, one label each
        task = _tasks(client, title)[0]
        client.call("POST", f"/api/tasks/{task['id']}/annotations/", _ann("pass"))
    real_export = LabelStudioClient.export
    files_before = set(home.labels_inbox.rglob("*.json"))

    def stop_after_the_first_file(self, project_id, all_tasks):
        if set(home.labels_inbox.rglob("*.json")) - files_before:
            server.stop()  # down after one project's file was written, before the next project's export
        return real_export(self, project_id, all_tasks)
    monkeypatch.setattr(LabelStudioClient, "export", stop_after_the_first_file)
    with pytest.raises(LabelStudioUnavailable, match="unreachable.*retries"):
        ticker.run_until_quiet(MONDAY + timedelta(days=4))
    assert len(set(home.labels_inbox.rglob("*.json")) - files_before) == 1  # the first project's, whole
    with pytest.raises(LabelStudioUnavailable):  # still down: the tick fails again, the cursor stays
        ticker.run_until_quiet(MONDAY + timedelta(days=4, minutes=1))
    monkeypatch.setattr(LabelStudioClient, "export", real_export)
    restarted = type(server)(server.data_dir).start()
    world["server"] = restarted
    monkeypatch.setenv("LABEL_STUDIO_URL", restarted.url)
    try:
        ticker.defs = build_defs({**run_resources(home), "label_studio": LabelStudioResource(url=restarted.url)})
        ticker.run_until_quiet(MONDAY + timedelta(days=4, minutes=2))
        ticker.run_until_quiet(MONDAY + timedelta(days=4, minutes=3))
        labels = _sql(home, "SELECT * FROM human_labels WHERE source = 'annotation'")
        assert labels.height == before + 2
        assert labels.select("label_id").n_unique() == labels.height
        assert json.loads(ticker.cursors["label_studio_sensor"])["pending"] == {}
    finally:
        restarted.stop()
