"""The Dagster UI checked as a person would see it, in headless Chromium.

    python -m feedback_pipeline_tests.ui_check --home PATH [--out PNG] [--prepare] [--dev]

Starts `dagster-webserver -w workspace.yaml` (`--dev`: `dagster dev`, which also runs
the daemon and so the sensors) on a free loopback port against the home folder and
its Dagster instance ($DAGSTER_HOME, else HOME/dagster with the repo's dagster.yaml),
then checks:

- through the webserver's GraphQL API: every asset of the code location is in the
  graph with a group (one per stage), a description, an owner and kinds; the latest
  `raw_traces` materialization carries the accounting (row count, read, loaded,
  duplicates, quarantined) and it equals what the warehouse holds for that week;
  `ingest_quarantine`'s row count equals the quarantined count; `weekly_report` (when
  materialized) links a report file that exists;
- in Chromium, driven over the DevTools protocol (`websockets`, no browser download):
  the global lineage page, groups expanded, shows every asset's name, and the
  `raw_traces` events page shows those metadata values. Screenshots of both are saved
  (`--out`, default HOME/exports/ui_check/asset_graph.png, plus `..._raw_traces.png`).

`--prepare` first generates a tiny demo world and materializes its one week when the
home has no `raw_traces` yet. Exit status 0 when every check passed, else 1 with the
problems listed; 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio")
STAGES = ("ingest", "scoring", "sampling", "labels", "evalset", "impact")
ACCOUNTING = ("dagster/row_count", "read", "loaded", "duplicates_dropped", "quarantined")
WIDTH, HEIGHT = 1600, 1000


# ------------------------------------------------------------------ the webserver

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def webserver(home: Path, dagster_home: Path, log: Path, dev: bool = False, timeout: float = 120):
    """The Dagster UI on a free loopback port; yields its base URL once the code has loaded."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    cmd = ([str(bin_dir / "dagster"), "dev"] if dev else [str(bin_dir / "dagster-webserver")]) + [
        "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "FEEDBACK_PIPELINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "PYTHONWARNINGS": "ignore"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: dagster dev has children
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited ({proc.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Dagster UI did not load the code within {timeout} s; see {log}")
            try:
                entries = graphql(base, "{ workspaceOrError { ... on Workspace { locationEntries { "
                                        "loadStatus locationOrLoadError { __typename "
                                        "... on PythonError { message } } } } } }")["workspaceOrError"]["locationEntries"]
            except OSError:
                entries = []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"].get("message") for e in entries
                          if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
                if errors:
                    raise RuntimeError(f"the code location failed to load: {errors}")
                break
            time.sleep(0.5)
        yield base
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session), then SIGKILL
    whatever of that group is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # children may outlive the leader briefly


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps(
        {"query": query, "variables": variables or {}}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


# -------------------------------------------------------------------- the browser

class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, binary: str = CHROMIUM):
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="ui-check-chromium-"))
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # /usr/bin/chromium is a wrapper script: stop its whole group
        port_file = self.profile / "DevToolsActivePort"
        self._until(lambda: port_file.exists() and len(port_file.read_text().split()) >= 2, 30, "DevTools port")
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params) -> dict:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # skip events until our answer
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self._until(lambda: self.js("document.readyState") == "complete", 30, f"{url} to load")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, needles, timeout: float = 30) -> list[str]:
        """Wait until the page shows every needle; return those still missing at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.25)

    def click_button(self, label: str = "", icon: str = "") -> bool:
        return bool(self.js(f"""(() => {{ for (const b of document.querySelectorAll('button')) {{
            if (({json.dumps(label)} && b.innerText.trim() === {json.dumps(label)}) ||
                ({json.dumps(icon)} && b.querySelector('[aria-label="{icon}"]'))) {{ b.click(); return true; }} }}
            return false; }})()"""))

    def key(self, key: str, code: str, modifiers: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=code, modifiers=modifiers,
                      windowsVirtualKeyCode=ord(key.upper()))

    def drag(self, start: tuple[float, float], by: tuple[float, float]) -> None:
        (x, y), (dx, dy) = start, by
        self.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for step in range(1, 11):
            self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x + dx * step / 10, y=y + dy * step / 10,
                      button="left", buttons=1)
        self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x + dx, y=y + dy, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop_group(self.proc)
            shutil.rmtree(self.profile, ignore_errors=True)

    @staticmethod
    def _until(ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)


# The screen boxes of the graph's nodes named `names`, and of the graph's viewport.
_BOXES_JS = """((names) => {
  const found = {}; let viewport = null;
  for (const el of document.querySelectorAll('div, span')) {
    const t = el.textContent.trim();
    if (el.children.length === 0 && names.includes(t)) {
      const r = el.getBoundingClientRect();
      if (r.width > 0) found[t] = [r.left, r.top, r.right, r.bottom];
      if (!viewport) {  // the first ancestor that is wide and fixed on screen (the graph itself pans)
        let p = el.parentElement;
        const fits = (r) => r.width >= innerWidth * 0.5 && r.top >= 0 && r.bottom <= innerHeight;
        while (p && !fits(p.getBoundingClientRect())) p = p.parentElement;
        if (p) { const v = p.getBoundingClientRect(); viewport = [v.left, v.top, v.right, v.bottom]; }
      }
    }
  }
  return {found, viewport};
})"""


def show_whole_graph(browser: Chromium, base: str, names: list[str]) -> list[str]:
    """Open the global lineage with every group expanded, zoomed out and centred until each
    asset's node is on screen; return the names still not visible."""
    browser.open(f"{base}/asset-groups")
    browser.wait_for_text(list(STAGES), timeout=30)
    browser.key("e", "KeyE", modifiers=1)  # Alt+E: expand all groups
    missing = names
    for _ in range(12):
        time.sleep(0.5)  # let the graph re-render after a layout change
        boxes = browser.js(f"{_BOXES_JS}({json.dumps(names)})")
        found, viewport = boxes["found"], boxes["viewport"]
        if found and viewport:
            left = min(b[0] for b in found.values())
            top = min(b[1] for b in found.values())
            right = max(b[2] for b in found.values())
            bottom = max(b[3] for b in found.values())
            centre = ((viewport[0] + viewport[2]) / 2, (viewport[1] + viewport[3]) / 2)
            browser.drag(centre, (centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2))
            time.sleep(0.3)
            boxes = browser.js(f"{_BOXES_JS}({json.dumps(names)})")
            found, viewport = boxes["found"], boxes["viewport"]
            missing = [n for n in names if n not in found or not _inside(found[n], viewport)]
            if not missing:
                return []
        browser.click_button(icon="zoom_out")
    return missing


def _inside(box, viewport, margin: float = 40, top: float = 100) -> bool:
    """On screen with room for group headers, and below the search bar that overlays the graph."""
    return (box[0] >= viewport[0] + margin and box[1] >= viewport[1] + top
            and box[2] <= viewport[2] - margin and box[3] <= viewport[3] - margin)


# ---------------------------------------------------------------------- the checks

ASSETS_QUERY = """{ assetNodes { assetKey { path } groupName description kinds
  owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } } } }"""
LATEST_QUERY = """query ($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(limit: 1) { partition runId metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
    ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url } } } } } }"""


def latest_metadata(base: str, asset: str) -> tuple[str | None, dict]:
    found = graphql(base, LATEST_QUERY, {"path": [asset]})["assetOrError"].get("assetMaterializations") or []
    if not found:
        return None, {}
    entry = found[0]
    values = {m["label"]: m.get("intValue", m.get("floatValue", m.get("path", m.get("url"))))
              for m in entry["metadataEntries"]}
    return entry["partition"], values


def warehouse_counts(home: Path, week: str) -> dict:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE week = ?", [week]).fetchone()[0]
                for t in ("raw_traces", "ingest_quarantine")}


def check_api(base: str, home: Path) -> tuple[list[str], dict]:
    """Problems found through GraphQL, and the figures the browser should then show."""
    from feedback_pipeline.definitions import ASSETS

    problems = []
    expected = sorted(k.to_user_string() for a in ASSETS for k in a.keys)
    nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(base, ASSETS_QUERY)["assetNodes"]}
    problems += [f"asset {k} is not in the UI's asset graph" for k in expected if k not in nodes]
    for key, node in sorted(nodes.items()):
        if node["groupName"] not in STAGES:
            problems.append(f"{key}: group {node['groupName']!r} is not a stage {STAGES}")
        if not (node["description"] or "").strip():
            problems.append(f"{key}: no description")
        if not node["owners"] or not node["kinds"]:
            problems.append(f"{key}: no owner or no kinds")
    week, traces = latest_metadata(base, "raw_traces")
    if week is None:
        return problems + ["raw_traces has no materialization to show (run a week first, or --prepare)"], {}
    problems += [f"raw_traces {week}: metadata {k} missing" for k in ACCOUNTING if k not in traces]
    if not problems:
        if traces["read"] != traces["loaded"] + traces["duplicates_dropped"] + traces["quarantined"]:
            problems.append(f"raw_traces {week}: read != loaded + duplicates + quarantined: {traces}")
        stored = warehouse_counts(home, week)
        if (traces["dagster/row_count"], traces["quarantined"]) != (stored["raw_traces"], stored["ingest_quarantine"]):
            problems.append(f"raw_traces {week}: the UI shows {traces} but the warehouse holds {stored}")
        _, quarantine = latest_metadata(base, "ingest_quarantine")
        if quarantine.get("dagster/row_count") != traces["quarantined"]:
            problems.append(f"ingest_quarantine: row count {quarantine.get('dagster/row_count')} "
                            f"!= raw_traces' quarantined {traces['quarantined']}")
    if "weekly_report" in nodes:
        _, report = latest_metadata(base, "weekly_report")
        if report and not (report.get("report") and Path(report["report"]).is_file()):
            problems.append(f"weekly_report: no report file linked ({report.get('report')})")
    return problems, {"week": week, "names": expected, "raw_traces": traces}


def check_browser(base: str, figures: dict, out: Path) -> list[str]:
    problems = []
    # A new instance greets its first visitor with a newsletter dialog over the page;
    # dismiss it as "Skip" would (it writes $DAGSTER_HOME/.nux/nux.yaml).
    graphql(base, "mutation { setNuxSeen }")
    browser = Chromium()
    try:
        missing = show_whole_graph(browser, base, figures["names"])
        browser.screenshot(out)
        if "Join the Dagster community" in browser.text():
            problems.append("asset graph page: a dialog covers the graph")
        problems += [f"asset graph page: {n} not shown" for n in missing]
        traces = figures["raw_traces"]
        browser.open(f"{base}/assets/raw_traces?view=events")
        needles = [*ACCOUNTING, figures["week"], str(traces["dagster/row_count"]), str(traces["quarantined"])]
        missing = browser.wait_for_text(needles)
        browser.screenshot(out.with_name(f"{out.stem}_raw_traces.png"))
        problems += [f"raw_traces events page: {n!r} not shown" for n in missing]
    finally:
        browser.close()
    return problems


# ----------------------------------------------------------------- preparing a home

def dagster_home_for(home: Path) -> Path:
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return dagster_home


def prepare(home: Path, dagster_home: Path) -> None:
    """A tiny demo world and its one week materialized, unless a week is loaded already."""
    import dagster as dg

    from feedback_pipeline.runs import materialize_weeks
    from feedback_pipeline.demo.world import DEMO_FIRST_WEEK, generate_world
    from feedback_pipeline.resources import FeedbackHome
    from feedback_pipeline.scoring.judge import JudgeResource

    if (home / "warehouse.duckdb").exists():
        import duckdb

        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            if con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_name = 'raw_traces'").fetchone()[0]:
                return
    generate_world(home, seed=7, weeks=1, turns_per_week=1_500)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        materialize_weeks([DEMO_FIRST_WEEK.isoformat()], instance=instance,
                          resources={"home": FeedbackHome(path=str(home)), "judge": JudgeResource()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("FEEDBACK_PIPELINE_HOME", ".feedback_home")))
    parser.add_argument("--out", type=Path, help="PNG of the asset graph (default HOME/exports/ui_check/asset_graph.png)")
    parser.add_argument("--prepare", action="store_true", help="materialize a tiny world's week if none is loaded")
    parser.add_argument("--dev", action="store_true", help="start `dagster dev` (webserver + daemon)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"ui_check: {CHROMIUM} is missing (Debian: apt-get install chromium, or `make ui-check`)")
        return 2
    home = args.home.resolve()
    out = (args.out or home / "exports" / "ui_check" / "asset_graph.png").resolve()
    dagster_home = dagster_home_for(home)
    if args.prepare:
        prepare(home, dagster_home)
    started = time.monotonic()
    with webserver(home, dagster_home, out.parent / "webserver.log", dev=args.dev) as base:
        print(f"ui_check: Dagster UI up at {base} in {time.monotonic() - started:.1f} s")
        problems, figures = check_api(base, home)
        if figures:
            problems += check_browser(base, figures, out)
    for problem in problems:
        print(f"ui_check: PROBLEM {problem}")
    if figures:
        print(f"ui_check: {len(figures['names'])} assets; raw_traces {figures['week']}: "
              + ", ".join(f"{k} {figures['raw_traces'][k]}" for k in ACCOUNTING))
        print(f"ui_check: screenshots {out} and {out.with_name(out.stem + '_raw_traces.png')}")
    print("ui_check: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
