"""The LLM judge: which traces to judge, redacted prompts, cached async calls, checked verdicts.

This module only gathers the public names; each concern has its module:
`resource` (JudgeResource: where and how to call an OpenAI-compatible endpoint),
`selection` (which traces, within which budget, with what inclusion probability),
`prompts` (what is sent, and the hashes that key the cache), `cache` (the `judge_cache`
table), `calls` (the HTTP calls), `answers` (reading an answer) and `traces`
(`judge_traces`, which runs them all over a frame). The `automated_scores` asset is in
`scoring/assets.py`. `openai` is imported only by the functions that call the endpoint.
"""

from feedback_pipeline.scoring.columns import JUDGE_SCHEMA
from feedback_pipeline.scoring.judge.answers import completion_fields, parse_answer
from feedback_pipeline.scoring.judge.cache import JudgeCache
from feedback_pipeline.scoring.judge.prompts import PROMPT_TEMPLATE_VERSION, add_hashes, build_prompts, system_prompt
from feedback_pipeline.scoring.judge.resource import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, JudgeResource
from feedback_pipeline.scoring.judge.selection import call_budget, prepare_rows, select_for_judging
from feedback_pipeline.scoring.judge.traces import empty_judge_columns, judge_traces, judge_traces_async, run_sync

__all__ = [
    "ENV_API_KEY", "ENV_BASE_URL", "ENV_MODEL", "JUDGE_SCHEMA", "PROMPT_TEMPLATE_VERSION",
    "JudgeCache", "JudgeResource", "add_hashes", "build_prompts", "call_budget", "completion_fields",
    "empty_judge_columns", "judge_traces", "judge_traces_async", "parse_answer", "prepare_rows",
    "run_sync", "select_for_judging", "system_prompt",
]
