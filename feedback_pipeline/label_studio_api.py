"""Talking to a Label Studio server over its REST API: the resource, authentication, and
the few calls the pipeline makes (projects, task import, JSON export, users).

Configuration comes from Label Studio's own variables, read when a run or tick uses the
resource, never at import: `LABEL_STUDIO_URL` and `LABEL_STUDIO_API_KEY`. Unset URL:
`enabled` is False and nothing talks to Label Studio (the file exports stay the way).
The key is never a config field, never logged, never in an error message.

What goes into a project and how annotations become labels is
`labels/label_studio_sync.py`'s; the task format is `label_studio.py`'s.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Optional

import dagster as dg

URL_ENV = "LABEL_STUDIO_URL"
KEY_ENV = "LABEL_STUDIO_API_KEY"


class LabelStudioUnavailable(RuntimeError):
    """The server is unreachable or answered 5xx: the run or tick fails and is retried later."""


class LabelStudioError(RuntimeError):
    """The server refused a request (4xx): a configuration problem a person must fix."""


def is_personal_access_token(key: str) -> bool:
    """A personal access token is a JWT (refresh token); a legacy token is 40 hex characters."""
    parts = key.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(header, dict) and "alg" in header


class LabelStudioClient:
    """One session against one server. Every failure names the call, never the key."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0):
        import requests

        self.url = url.rstrip("/")
        self._key = api_key
        self._timeout = timeout_s
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy from the environment: the URL is the operator's
        self._pat = is_personal_access_token(api_key)
        self._access: str | None = None

    def close(self) -> None:
        self._session.close()

    def _auth_header(self, refresh: bool = False) -> str:
        if not self._pat:
            return f"Token {self._key}"
        if self._access is None or refresh:
            answer = self._send("POST", "/api/token/refresh/", {"refresh": self._key}, auth=None)
            self._access = answer.json()["access"]
        return f"Bearer {self._access}"

    def _send(self, method: str, path: str, body: Any = None, params: dict | None = None,
              auth: str | None = None):
        import requests

        what = f"{method} {path}"
        try:
            response = self._session.request(
                method, self.url + path, json=body, params=params, timeout=self._timeout,
                headers={"Authorization": auth} if auth else {})
        except requests.RequestException as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} is unreachable ({type(exc).__name__} on {what}); "
                "nothing was changed on our side, the next run or sensor tick retries") from None
        if response.status_code >= 500:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} answered {response.status_code} on {what}; "
                "nothing was changed on our side, the next run or sensor tick retries")
        if response.status_code >= 400:
            raise LabelStudioError(
                f"Label Studio at {self.url} refused {what} with {response.status_code}: "
                f"{response.text[:300]} (check {URL_ENV} and {KEY_ENV}: the key's user must be "
                "allowed to create projects and import tasks)")
        return response

    def call(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        """The JSON answer of an authenticated call (a PAT's access token is renewed once on 401)."""
        try:
            response = self._send(method, path, body, params, auth=self._auth_header())
        except LabelStudioError as exc:
            if not (self._pat and " 401:" in str(exc)):
                raise
            response = self._send(method, path, body, params, auth=self._auth_header(refresh=True))
        return response.json() if response.content else None

    # The calls the pipeline makes.
    def projects(self) -> list[dict]:
        out, page = [], 1
        while True:
            answer = self.call("GET", "/api/projects", params={"page": page, "page_size": 100})
            if isinstance(answer, list):  # older servers answer a plain list
                return answer
            out += answer["results"]
            if not answer.get("next"):
                return out
            page += 1

    def ensure_project(self, title: str, label_config: str) -> tuple[int, bool]:
        """(project id, created?) of the project titled `title`, created with `label_config` if missing."""
        for project in self.projects():
            if project.get("title") == title:
                return int(project["id"]), False
        created = self.call("POST", "/api/projects", {"title": title, "label_config": label_config})
        return int(created["id"]), True

    def export(self, project_id: int, all_tasks: bool) -> list[dict]:
        """The project's JSON export: every task (`all_tasks`) or only the annotated ones."""
        return self.call("GET", f"/api/projects/{project_id}/export",
                         params={"exportType": "JSON", "download_all_tasks": str(all_tasks).lower()})

    def import_tasks(self, project_id: int, tasks: list[dict]) -> int:
        if not tasks:
            return 0
        answer = self.call("POST", f"/api/projects/{project_id}/import", tasks)
        return int(answer.get("task_count", len(tasks)))

    def user_emails(self) -> dict[int, str]:
        users = self.call("GET", "/api/users")
        users = users.get("results", []) if isinstance(users, dict) else users
        return {int(u["id"]): u["email"] for u in users if u.get("email")}


class LabelStudioResource(dg.ConfigurableResource):
    """A Label Studio server. `url` empty: $LABEL_STUDIO_URL; the key is always
    $LABEL_STUDIO_API_KEY (a secret: never a config value). Neither set: disabled."""

    url: Optional[str] = None
    timeout_s: float = 30.0

    @property
    def base_url(self) -> str | None:
        return self.url or os.environ.get(URL_ENV) or None

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    def client(self) -> LabelStudioClient:
        key = os.environ.get(KEY_ENV)
        if not self.base_url or not key:
            raise LabelStudioError(f"Label Studio needs both {URL_ENV} and {KEY_ENV}")
        return LabelStudioClient(self.base_url, key, self.timeout_s)
