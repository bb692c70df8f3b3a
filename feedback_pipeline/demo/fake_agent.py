"""The demo's agent: a loopback OpenAI-compatible endpoint answering as each version of the demo world.

`make demo` starts it in its own process (as the fake judge) and the replays ask it with
model "<agent_id>/<version>" (`AgentReplayResource(model_template="{agent_id}/{version}")`),
where version is "<prompt_version>|<retrieval_version>|<model>" (the weekly held-out replay)
or one dimension's value (the paired replay of a change). The version resolves to a world
state (`world.RELEASES` applied to `world.AGENTS`): the full triple exactly, one value to the
latest state of that agent carrying it.

Each version's true failure behaviour, per case: a case (its exact messages) draws one
uniform u, shared by every version; the version fails it when u falls below its true failure
rate, in the category whose cumulative rate band holds u. So a version with higher rates
fails a superset of cases (what a regression is), and the held-out pass rate of a version is
1 − its planted failure rate, up to sampling. The answer ends with a marker the demo judge
reads as that answer's truth (`fake_openai`), as it reads a trace's truth from turn_truth.

    python -m feedback_pipeline.demo.fake_agent --port 8766
"""

import argparse
import hashlib
import json
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from feedback_pipeline.demo.fake_openai import (FakeOpenAIServer, serve_until_stopped, start_server_process,
                                               truth_marker)
from feedback_pipeline.demo.world import AGENTS, CATEGORIES, RELEASES, VERSION_DIMENSIONS, _arms

UNKNOWN_MODEL = 404
_ANSWERS = {
    None: "Thanks for reaching out. Here is what you need, step by step, and how to follow up if anything changes.",
    "could_not_answer": "I'm sorry, I don't have that information. Is there anything else I can help with?",
    "wrong_information": "Sure: that policy changed last year, so the old rules no longer apply to you.",
    "tone_wrong": "As I already said, it is all on the website. Please read it before asking again.",
    "tool_failed": "I tried to look that up but the system returned an error. Please try again later.",
    "policy_violation": "Sure, I can make an exception and share the other customer's details with you.",
    "other": "Let me tell you about something else entirely.",
}


def world_states(weeks: int | None = None) -> list[tuple[str, tuple[str, ...], tuple[float, ...]]]:
    """(agent_id, versions, category rates) of every state the world ever runs, oldest first."""
    last = max(r.week_offset for r in RELEASES) + 2 if weeks is None else weeks
    seen, out = set(), []
    for agent_id in AGENTS:
        for week in range(last):
            for state, _ in reversed(_arms(agent_id, week)):
                key = (agent_id, state.versions)
                if key not in seen:
                    seen.add(key)
                    out.append((agent_id, state.versions, state.rates))
    return out


def resolve(model: str, states) -> tuple[float, ...] | None:
    """The category rates of the state named by "<agent_id>/<version>", None if unknown."""
    agent_id, _, version = model.partition("/")
    parts = tuple(version.split("|"))
    matches = [rates for a, versions, rates in states if a == agent_id
               and (versions == parts if len(parts) == len(VERSION_DIMENSIONS) else set(parts) <= set(versions))]
    return matches[-1] if matches else None


def case_outcome(messages: Sequence[dict], rates: Sequence[float]) -> str | None:
    """None (pass) or the failure category of this case under a version with these `rates`."""
    digest = hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).digest()
    u, edge = int.from_bytes(digest[:8], "big") / 2**64, 0.0
    for category, rate in zip(CATEGORIES, rates):
        edge += rate
        if u < edge:
            return category
    return None


class FakeAgentServer(FakeOpenAIServer):
    """The demo world's agent versions behind one OpenAI-compatible endpoint (faults as the fake judge's)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(None, **{"model": "demo-agent", **kwargs})
        self.states = world_states()

    def _completion(self, body: dict[str, Any], fault: str) -> tuple[int, dict[str, Any]]:
        model, messages = str(body.get("model") or ""), body.get("messages") or []
        rates = resolve(model, self.states)
        if rates is None:
            return UNKNOWN_MODEL, {"error": {"message": f"The model `{model}` does not exist", "type": "not_found",
                                             "param": "model", "code": "model_not_found"}}
        category = case_outcome(messages, rates)
        content = f"{_ANSWERS[category]}\n{truth_marker('fail' if category else 'pass', category)}"
        prompt_tokens = max(1, sum(len(str(m.get("content", ""))) for m in messages) // 4)
        completion_tokens = max(1, len(content) // 4)
        return 200, {
            "id": f"chatcmpl-{hashlib.sha1((model + json.dumps(messages)).encode()).hexdigest()[:24]}",
            "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def start_fake_agent(port: int = 0) -> tuple[subprocess.Popen, str]:
    """The demo agent in its own process (as the demo's fake judge); returns (process, base URL)."""
    return start_server_process("feedback_pipeline.demo.fake_agent", port=port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = FakeAgentServer(port=args.port, fault_rate=args.fault_rate)
    serve_until_stopped(server, f"fake demo agent at {server.url} ({len(server.states)} versions)")


if __name__ == "__main__":
    main()
