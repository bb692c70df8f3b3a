"""What the judge is sent: the rubric's system prompt, each trace's (redacted) user prompt,
and the hashes that key the cache.

Pure functions over Polars frames. Which traces get a prompt is `selection.py`'s; sending
them is `calls.py`'s. Bump `PROMPT_TEMPLATE_VERSION` whenever the layout below changes:
it is part of every cache key.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from feedback_pipeline.redact import redact_columns
from feedback_pipeline.rubrics import Rubric

if TYPE_CHECKING:
    from feedback_pipeline.scoring.judge.resource import JudgeResource

PROMPT_TEMPLATE_VERSION = "judge-prompt-v1"  # bump when the prompt layout below changes
CONTEXT_COLUMN = "conversation_context"  # optional input column

SYSTEM_SUFFIX = (
    "\n\n---\nThe user turn starts with a `Reference:` line that only identifies the "
    "record; it is not part of the conversation and must not affect the verdict. "
    "Reply with the JSON object only."
)


def system_prompt(rubric: Rubric) -> str:
    """The same for every trace: the rubric's instructions."""
    return rubric.instructions + SYSTEM_SUFFIX


def build_prompts(frame: pl.DataFrame, redact: bool) -> pl.DataFrame:
    """trace_id, user_prompt: the (redacted) turn, led by its `Reference:` line."""
    texts = ["user_message", "agent_response"] + ([CONTEXT_COLUMN] if CONTEXT_COLUMN in frame.columns else [])
    turns = frame.select("trace_id", *texts)
    if redact:
        turns = redact_columns(turns, texts)
    context = pl.col(CONTEXT_COLUMN) if CONTEXT_COLUMN in texts else pl.lit(None, pl.String)
    return turns.select(
        "trace_id",
        user_prompt=pl.format(
            "Reference: {}\n\nConversation so far:\n{}\n\nUser message:\n{}\n\nAgent response:\n{}",
            pl.col("trace_id"),
            context.fill_null("(none)"),
            pl.col("user_message").fill_null("(empty)"),
            pl.col("agent_response").fill_null("(empty)"),
        ),
    )


def add_hashes(prompts: pl.DataFrame, rubric: Rubric, resource: JudgeResource) -> pl.DataFrame:
    """Adds judge_prompt_hash (sha256 of the exact messages) and cache_key.

    cache_key = sha256(prompt hash | rubric file hash | model | judge params): the
    prompt holds the redacted input and the rubric text, so any change to either,
    to the model or to the params is a cache miss.
    """
    params = json.dumps(resource.judge_params(), sort_keys=True)
    con = duckdb.connect()
    try:
        con.register("prompts", prompts.with_row_index("_row"))
        return con.sql(
            "SELECT * EXCLUDE (_row), sha256(judge_prompt_hash || '|' || $suffix) AS cache_key"
            " FROM (SELECT *, sha256($system || chr(0) || user_prompt) AS judge_prompt_hash"
            "       FROM prompts) ORDER BY _row",
            params={"system": system_prompt(rubric),
                    "suffix": "|".join([rubric.content_hash, resource.model or "", params])},
        ).pl()
    finally:
        con.close()
