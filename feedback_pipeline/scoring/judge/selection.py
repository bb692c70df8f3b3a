"""Which traces the judge sees: the call budget and a sample with known inclusion probability.

Escalated and thumbs-down traces are always judged; the budget (calls, or cost turned
into calls) samples the rest. `prepare_rows` joins the selection to the prompts and cache
keys of the selected rows. Building prompts is `prompts.py`'s; calling is `calls.py`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from feedback_pipeline.rubrics import Rubric
from feedback_pipeline.scoring.judge.prompts import add_hashes, build_prompts, system_prompt

if TYPE_CHECKING:
    from feedback_pipeline.scoring.judge.resource import JudgeResource

EXPECTED_COMPLETION_TOKENS = 60  # for the pre-call cost estimate only


def select_for_judging(frame: pl.DataFrame, max_calls: int | None, seed: int = 0) -> pl.DataFrame:
    """`frame` plus `judge_selected` and `judge_selection_prob` (the inclusion probability).

    Escalated and thumbs-down traces are always judged (probability 1). The rest
    are a simple random sample without replacement of what the budget leaves, so
    each has probability k / N_rest. The sample depends only on the seed and the
    set of trace_ids, not on row order.
    """
    forced = pl.col("escalated").fill_null(False) | (pl.col("thumbs") == "down").fill_null(False)
    indexed = frame.with_row_index("_row").with_columns(forced.alias("_forced"))
    if max_calls is None:
        chosen = indexed.get_column("_row")
        prob_rest = 1.0
    else:
        import numpy as np

        rest = indexed.filter(~pl.col("_forced")).sort("trace_id", "_row").get_column("_row")
        n_forced = indexed.height - rest.len()
        k = min(rest.len(), max(0, max_calls - n_forced))
        picks = np.random.default_rng(seed).choice(rest.len(), size=k, replace=False)
        chosen = rest.gather(np.sort(picks))
        prob_rest = k / rest.len() if rest.len() else 1.0
    return indexed.with_columns(
        judge_selected=pl.col("_forced") | pl.col("_row").is_in(chosen.implode()),
        judge_selection_prob=pl.when(pl.col("_forced")).then(1.0).otherwise(prob_rest),
    ).drop("_row", "_forced")


def call_budget(resource: JudgeResource, system: str, prompts: pl.DataFrame | None) -> int | None:
    """The most calls the resource's budgets allow (cost estimated at ~4 chars a token); None: unlimited.

    `prompts` (all of them) is needed only for a cost budget.
    """
    budgets = [resource.max_judge_calls_per_week]
    if resource.max_cost_usd is not None and prompts is not None and prompts.height:
        user_chars = prompts.select(pl.col("user_prompt").str.len_chars().mean()).item()
        per_call = resource.cost_usd((len(system) + user_chars) / 4, EXPECTED_COMPLETION_TOKENS)
        if per_call > 0:
            budgets.append(int(resource.max_cost_usd // per_call))
    limits = [b for b in budgets if b is not None]
    return min(limits) if limits else None


def prepare_rows(frame: pl.DataFrame, rubric: Rubric, resource: JudgeResource) -> tuple[pl.DataFrame, int | None]:
    """One row per input row, in input order: trace_id, judge_selected, judge_selection_prob and,
    for the selected rows, user_prompt, judge_prompt_hash and cache_key; plus the call budget.

    Redacting and hashing are the costly steps, so only the selected rows get a prompt
    unless a cost budget needs the length of all of them.
    """
    flags = frame.select("trace_id", "escalated", "thumbs")
    if resource.max_cost_usd is None:
        budget = call_budget(resource, system_prompt(rubric), None)
        selected = select_for_judging(flags, budget, resource.selection_seed)
        prompts = build_prompts(frame.filter(selected["judge_selected"]), resource.redact_pii)
    else:
        prompts = build_prompts(frame, resource.redact_pii)
        budget = call_budget(resource, system_prompt(rubric), prompts)
        selected = select_for_judging(flags, budget, resource.selection_seed)
        prompts = prompts.filter(selected["judge_selected"])
    hashed = add_hashes(prompts, rubric, resource).drop("trace_id")
    indexed = selected.drop("escalated", "thumbs").with_row_index("_row")
    hashed = hashed.with_columns(_row=indexed.filter("judge_selected")["_row"])
    rows = indexed.join(hashed, on="_row", how="left", maintain_order="left").drop("_row")
    return rows, budget
