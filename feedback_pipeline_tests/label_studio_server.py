"""A real Label Studio server for tests: its own virtualenv (`make label-studio`), loopback,
SQLite, a throwaway data dir, no analytics, version check or Sentry, a known user and token.

The first start runs the migrations (~25 s, minutes on a busy machine): that data dir is
kept as a template beside the virtualenv and copied per server (a copy starts in seconds).
Label Studio moves to port+1 without failing when its port is busy, so the start is
checked against its log and retried on another free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = ROOT / ".venv-labelstudio"
LS_BIN = LS_VENV / "bin" / "label-studio"
TEMPLATE = LS_VENV / "test-data-template"
USER = "admin@example.com"
PASSWORD = "not-a-secret-123"
TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"  # the legacy token of USER
START_TIMEOUT_S = 420.0  # a cold start on two busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(data_dir: Path) -> dict[str, str]:
    """Only what Label Studio needs: it also reads USERNAME, PORT, HOST, DEBUG, CI unprefixed."""
    return {
        "PATH": f"{LS_VENV / 'bin'}:/usr/bin:/bin", "HOME": str(data_dir), "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_SENTRY_DSN": "", "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "SECRET_KEY": "feedback-pipeline-tests-only",
    }


@dataclass
class LabelStudioServer:
    data_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self):
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "LabelStudioServer":
        for _ in range(5):
            self.port = _free_port()
            if self._start_on_port(timeout_s):
                return self
        raise RuntimeError(f"Label Studio did not start; see {self.log_path}")

    def _start_on_port(self, timeout_s: float) -> bool:
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(LS_BIN), "start", "--no-browser", "--data-dir", str(self.data_dir),
             "--internal-host", "127.0.0.1", "-p", str(self.port),
             "--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"],
            env=_environment(self.data_dir), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.data_dir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process.returncode}; see {self.log_path}")
            if f"Port {self.port} is in use" in self.log_path.read_text(errors="replace"):
                self.stop()  # it moved to another port: not ours to guess
                return False
            if self.answers():
                return True
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/current-user/whoami", timeout=5,
                                headers={"Authorization": f"Token {TOKEN}"}).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        """SIGTERM to the server's own process group (it was started in a new session)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def template_data_dir() -> Path:
    """A migrated data dir with USER and TOKEN, made once and reused (copied per server)."""
    version = (ROOT / "requirements-labelstudio.lock").read_text()
    marker = TEMPLATE / ".ready"
    if marker.exists() and marker.read_text() == version:
        return TEMPLATE
    shutil.rmtree(TEMPLATE, ignore_errors=True)  # made for another lock
    staging = TEMPLATE.with_name(TEMPLATE.name + f".staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    server = LabelStudioServer(staging / "data")
    server.data_dir.mkdir()
    try:
        server.start()
    finally:
        server.stop()
    (staging / "data" / ".ready").write_text(version)
    try:
        staging.joinpath("data").rename(TEMPLATE)
    except OSError:  # another test session made it meanwhile
        if not (marker.exists() and marker.read_text() == version):
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return TEMPLATE


def server_from_template(template: Path, where: Path) -> LabelStudioServer:
    data = where / "label_studio_data"
    shutil.copytree(template, data)
    return LabelStudioServer(data).start()
