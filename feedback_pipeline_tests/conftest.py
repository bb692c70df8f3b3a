"""Shared fixtures: a throw-away home folder, and a way to write landing files."""

import gzip
import json
from pathlib import Path

import pytest

from feedback_pipeline.resources import FeedbackHome

WEEK = "2026-11-16"


def good_record(trace_id: str, **overrides) -> dict:
    """A record that satisfies the landing contract; override fields to break it."""
    record = {
        "trace_id": trace_id,
        "conversation_id": "c-" + trace_id,
        "turn_index": 0,
        "timestamp": "2026-11-17T09:30:00Z",
        "agent_id": "refunds",
        "vertical": "ecommerce",
        "channel": "web",
        "intent": "refund_status",
        "user_id": "u1",
        "user_message": "Where is my refund?",
        "agent_response": "It was issued yesterday.",
        "tool_calls": [{"name": "lookup_order", "status": "ok", "latency_ms": 40}],
        "latency_ms": 800,
        "prompt_version": "p1",
        "retrieval_version": "r1",
        "model": "m1",
        "feedback": {"thumbs": None, "escalated": False, "escalation_reason": None, "user_rewrote": False},
    }
    for key, value in overrides.items():
        if key.startswith("feedback."):
            record["feedback"][key.split(".", 1)[1]] = value
        elif value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return record


_DROP = object()
DROP = _DROP


def write_jsonl(path: Path, lines: list, gz: bool = False) -> Path:
    """Write records (dicts are JSON-encoded; str/bytes are written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        chunks.append(line if isinstance(line, bytes) else line.encode())
    data = b"\n".join(chunks) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.fixture
def home(tmp_path) -> FeedbackHome:
    return FeedbackHome(path=str(tmp_path / "home"))


def run_resources(home: FeedbackHome, judge=None) -> dict:
    """Every resource the assets need, with nothing external configured unless given."""
    from feedback_pipeline.impact.agent import AgentReplayResource
    from feedback_pipeline.label_studio_api import LabelStudioResource
    from feedback_pipeline.scoring.judge import JudgeResource

    return {"home": home, "judge": judge or JudgeResource(), "agent": AgentReplayResource(),
            "label_studio": LabelStudioResource()}
