"""The agent under test: where it answers (`AgentReplayResource`) and the calls that ask it.

Any OpenAI-compatible endpoint, one model name per version. A call that fails becomes that
case's error text (never the endpoint's body, which may echo the key). `openai` is imported
only by the functions that call the endpoint. Which cases are asked, and caching, live in
`replay.py` and `replay_cache.py`.
"""

import asyncio
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg
import polars as pl

from feedback_pipeline.llm_client import async_openai

if TYPE_CHECKING:
    import openai

ENV_BASE_URL = "FEEDBACK_PIPELINE_AGENT_BASE_URL"
ENV_API_KEY = "FEEDBACK_PIPELINE_AGENT_API_KEY"
MESSAGES_VERSION = "replay-messages-v1"  # bump when `replay_requests.build_messages` changes


class AgentReplayResource(dg.ConfigurableResource):
    """The agent under test behind an OpenAI-compatible endpoint; `models` maps version -> model name."""

    base_url: Optional[str] = None
    api_key: Optional[str] = None
    models: dict[str, str] = {}  # a version missing here is sent as `model_template` names it
    # The model name of a version not in `models`: "{version}" (the default), or e.g.
    # "{agent_id}/{version}" when one endpoint serves several agents.
    model_template: str = "{version}"
    system_prompt: Optional[str] = None
    temperature: float = 0.0
    max_tokens: Optional[int] = None
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3

    @classmethod
    def from_env(cls, **overrides: Any) -> "AgentReplayResource":
        """`dg.EnvVar` for each agent variable that is set (as `JudgeResource.from_env`)."""
        names = {"base_url": ENV_BASE_URL, "api_key": ENV_API_KEY}
        env = {f: dg.EnvVar(name) for f, name in names.items() if os.environ.get(name)}
        return cls(**{**env, **overrides})

    @property
    def is_configured(self) -> bool:
        return bool(self.base_url or self.api_key)

    def model_for(self, version: str, agent_id: str | None = None) -> str:
        if version in self.models:
            return self.models[version]
        return self.model_template.format(version=version, agent_id=agent_id or "")

    def agent_params(self) -> dict[str, Any]:
        """The call settings that change an answer: part of the cache key."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "messages": MESSAGES_VERSION}

    def make_client(self) -> "openai.AsyncOpenAI":
        """An `openai.AsyncOpenAI` client for the endpoint."""
        return async_openai(self.base_url, self.api_key, self.timeout_s, self.max_retries)

    def __repr_args__(self):  # keep the key out of reprs and logs
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)


@dataclass
class Answer:
    """One agent call's outcome: the answer or the error, and the tokens it used."""

    answer: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


async def _ask(client, sem: asyncio.Semaphore, agent: AgentReplayResource, model: str,
               messages: list[dict]) -> Answer:
    import openai

    kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": agent.temperature}
    if agent.max_tokens is not None:
        kwargs["max_tokens"] = agent.max_tokens
    async with sem:
        try:
            completion = await client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            return Answer(error=f"timeout: no answer within {agent.timeout_s:g} s")
        except openai.APIStatusError as err:  # the status only: bodies may echo the key
            return Answer(error=f"HTTP {err.status_code} from the agent endpoint (model {model})")
        except openai.APIConnectionError:
            return Answer(error=f"connection error: agent endpoint unreachable (check {ENV_BASE_URL})")
        except Exception as err:  # noqa: BLE001 - one case must not sink the replay
            return Answer(error=f"unexpected {type(err).__name__}")
    content = completion.choices[0].message.content if completion.choices else None
    if not content or not content.strip():
        return Answer(error="empty answer")
    usage = completion.usage
    return Answer(content, None, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)


async def ask_all(todo: pl.DataFrame, agent: AgentReplayResource) -> list[Answer]:
    """One `Answer` per row of `todo` (model, messages as JSON), at most `agent.concurrency` at once."""
    sem = asyncio.Semaphore(agent.concurrency)
    async with agent.make_client() as client:
        return await asyncio.gather(*(_ask(client, sem, agent, m, json.loads(msgs))
                                      for m, msgs in zip(todo["model"], todo["messages"])))
