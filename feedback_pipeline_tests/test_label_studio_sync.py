"""The pure parts of the Label Studio sync: the pull cursor, key kinds, titles (no server)."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from feedback_pipeline.label_studio_api import LabelStudioClient, LabelStudioUnavailable, is_personal_access_token
from feedback_pipeline.labels.label_studio_sync import (new_annotations, project_title,
                                                        with_annotator_emails)


def _task(tid, *anns):
    return {"id": tid, "data": {"trace_id": f"t{tid}"}, "annotations": [
        {"id": aid, "updated_at": at, "created_at": at, "completed_by": 7} for aid, at in anns]}


def test_the_cursor_takes_each_annotation_once_even_at_the_same_instant():
    t = "2026-01-01T10:00:00.000001Z"
    first, cursor = new_annotations([_task(1, (1, t)), _task(2, (2, "2026-01-01T09:00:00Z"))], None)
    assert [a["id"] for task in first for a in task["annotations"]] == [1, 2]
    assert cursor == {"updated_at": "2026-01-01T10:00:00.000001+00:00", "ids": [1]}
    # Annotation 3 saved in the same microsecond as the cursor, 1 updated later, 2 unchanged.
    later = [_task(1, (1, "2026-01-01T11:00:00Z")), _task(2, (2, "2026-01-01T09:00:00Z")), _task(3, (3, t))]
    second, cursor2 = new_annotations(later, cursor)
    assert [a["id"] for task in second for a in task["annotations"]] == [1, 3]
    assert new_annotations(later, cursor2) == ([], cursor2)


def test_annotators_are_named_by_email_when_known():
    tasks, _ = new_annotations([_task(1, (1, "2026-01-01T10:00:00Z"))], None)
    assert with_annotator_emails(tasks, {7: "ann@example.com"})[0]["annotations"][0]["completed_by"] == {
        "id": 7, "email": "ann@example.com"}


def test_a_jwt_is_a_personal_access_token_and_a_hex_token_is_legacy():
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("=")
    assert is_personal_access_token(f"{header}.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.sig")
    assert not is_personal_access_token("0123456789abcdef0123456789abcdef01234567")


def test_project_titles():
    assert project_title("refunds", "v1") == "refunds · agent_quality v1"
    assert project_title("refunds", "v2", "adjudication") == "refunds · agent_quality v2 · adjudication"


class _Busy(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_5xx_fails_with_a_clear_message_that_names_no_key():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "0123456789abcdef0123456789abcdef0badc0de"
    try:
        with pytest.raises(LabelStudioUnavailable, match=r"answered 503 on GET /api/projects.*retries") as caught:
            LabelStudioClient(f"http://127.0.0.1:{server.server_port}", key).projects()
        assert key not in str(caught.value)
    finally:
        server.shutdown()
        server.server_close()
