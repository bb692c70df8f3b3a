"""`JudgeResource`: where and how to call the LLM judge (any OpenAI-compatible endpoint).

Settings, the budget knobs, the cost per token and the client it builds; nothing here
calls the endpoint. `openai` (~0.6 s to import) is imported only when a client is built,
so loading the Dagster definitions does not pay for it.
"""

import os
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg

from feedback_pipeline.llm_client import async_openai
from feedback_pipeline.scoring.judge.prompts import PROMPT_TEMPLATE_VERSION

if TYPE_CHECKING:
    import openai

ENV_BASE_URL = "FEEDBACK_PIPELINE_JUDGE_BASE_URL"
ENV_MODEL = "FEEDBACK_PIPELINE_JUDGE_MODEL"
ENV_API_KEY = "OPENAI_API_KEY"


class JudgeResource(dg.ConfigurableResource):
    """Where and how to call the LLM judge; without a model and an endpoint it judges nothing."""

    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key: Optional[str] = None
    concurrency: int = 32
    timeout_s: float = 30.0
    max_retries: int = 3  # HTTP retries by the openai client (429 honours Retry-After, 5xx, timeouts)
    redact_pii: bool = True
    temperature: float = 0.0
    structured_output: bool = True  # ask for a strict JSON schema; falls back on a 400
    input_usd_per_1m_tokens: float = 0.0
    output_usd_per_1m_tokens: float = 0.0
    max_judge_calls_per_week: Optional[int] = None  # None: judge every trace
    max_cost_usd: Optional[float] = None
    selection_seed: int = 0

    @classmethod
    def from_env(cls, **overrides: Any) -> "JudgeResource":
        """`dg.EnvVar` for each judge variable that is set; unset ones stay None.

        Dagster fails a run's whole config when a `dg.EnvVar` names an unset
        variable, even on an Optional field, so unset variables must not be passed.
        """
        names = {"base_url": ENV_BASE_URL, "model": ENV_MODEL, "api_key": ENV_API_KEY}
        env = {f: dg.EnvVar(name) for f, name in names.items() if os.environ.get(name)}
        return cls(**{**env, **overrides})

    @property
    def is_configured(self) -> bool:
        return bool(self.model) and bool(self.base_url or self.api_key)

    def make_client(self) -> "openai.AsyncOpenAI":
        return async_openai(self.base_url, self.api_key, self.timeout_s, self.max_retries)

    def judge_params(self) -> dict[str, Any]:
        """The call settings that change an answer: part of the cache key."""
        return {"temperature": self.temperature, "template": PROMPT_TEMPLATE_VERSION}

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input_usd_per_1m_tokens
                + completion_tokens * self.output_usd_per_1m_tokens) / 1e6

    def __repr_args__(self):  # keep the key out of reprs and logs
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)
