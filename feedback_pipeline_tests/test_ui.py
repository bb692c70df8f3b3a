"""The Dagster UI seen in a real browser: `ui_check` starts the webserver on a tiny
home with one materialized week, opens it in headless Chromium and must find every
stage's assets in the lineage graph and the ingest accounting on `raw_traces`'
events page (equal to what the warehouse holds), leaving two screenshots in the
home's exports/. Skips when /usr/bin/chromium is absent (`make ui-check` installs it)."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_pipeline_tests.ui_check import CHROMIUM, HEIGHT, WIDTH

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is absent: apt-get install chromium (or make ui-check)")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_ui_shows_every_stage_and_the_ingest_accounting(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "FEEDBACK_PIPELINE_HOME")}
    done = subprocess.run(
        [sys.executable, "-m", "feedback_pipeline_tests.ui_check", "--home", str(home), "--prepare"],
        cwd=REPO, env={**env, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "ui_check: OK" in done.stdout
    for name in ("asset_graph.png", "asset_graph_raw_traces.png"):
        shot = home / "exports" / "ui_check" / name
        assert png_size(shot) == (WIDTH, HEIGHT)
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
