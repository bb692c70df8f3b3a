"""Deterministic scorers: cheap, vectorized measures of every answer's shape.

Polars expressions only (no per-row Python), plus the previous-turn context a judge or
an annotator reads. These are also the response-shape measures the impact stage watches
for proxy gaming: answers getting shorter everywhere, more refusals, more disclaimers.
Assembling a week's `automated_scores` rows is `week.py`'s, not this module's.
"""

import polars as pl

# Refusals: the agent declines the request. Case-insensitive, matched anywhere.
REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) (?:sorry,? )?(?:but )?(?:unable|not able) to\b",
    r"\bI (?:can(?:no|')t|cannot|won't|will not) (?:help|assist|do that|provide|answer|process)\b",
    r"\bI(?:'m| am) (?:sorry,? )?but I (?:can(?:no|')t|cannot)\b",
    r"\b(?:unfortunately,? )?(?:that|this) is (?:not something|outside what) I can\b",
    r"\bI(?:'m| am) not (?:allowed|permitted|authori[sz]ed) to\b",
)
# Disclaimers and hedges: the answer protects itself instead of helping.
DISCLAIMER_PATTERNS = (
    r"\bplease note\b",
    r"\bI(?:'m| am) not a (?:medical|legal|financial|licensed|certified)\b",
    r"\b(?:this|it) is not (?:medical|legal|financial|professional) advice\b",
    r"\b(?:please )?consult (?:a|your) (?:doctor|dentist|lawyer|professional|specialist|advisor)\b",
    r"\bas an AI\b",
    r"\bI (?:may|might) be (?:wrong|mistaken)\b",
    r"\b(?:may|might) not be (?:accurate|up to date|complete)\b",
    r"\bsubject to change\b",
    r"\bfor informational purposes only\b",
)
LATENCY_BUCKETS_MS = (1_000, 3_000, 10_000)
LATENCY_LABELS = ("<1s", "1-3s", "3-10s", ">=10s")


def _any_of(patterns: tuple[str, ...]) -> str:
    # ASCII word boundaries: a Unicode \b keeps Rust's regex off its fast DFA (13x slower
    # here); every pattern is ASCII, so the match is the same.
    return "(?i)(?:" + "|".join(patterns).replace(r"\b", r"(?-u:\b)") + ")"


def deterministic_scores() -> list[pl.Expr]:
    """Expressions over raw_traces columns producing the DETERMINISTIC score columns."""
    response = pl.col("agent_response").fill_null("")
    tool_status = pl.col("tool_calls").list.eval(pl.element().struct.field("status") == "error")
    is_empty = response.str.strip_chars().str.len_chars() == 0
    is_refusal = response.str.contains(_any_of(REFUSAL_PATTERNS))
    tool_errors = tool_status.list.sum().fill_null(0).cast(pl.Int64)
    return [
        response.str.len_chars().cast(pl.Int64).alias("response_chars"),
        response.str.count_matches(r"\S+").cast(pl.Int64).alias("response_words"),
        is_empty.alias("is_empty"),
        is_refusal.alias("is_refusal"),
        response.str.contains(_any_of(DISCLAIMER_PATTERNS)).alias("has_disclaimer"),
        pl.col("tool_calls").list.len().fill_null(0).cast(pl.Int64).alias("tool_call_count"),
        tool_errors.alias("tool_error_count"),
        pl.col("latency_ms")
        .cut(list(LATENCY_BUCKETS_MS), labels=list(LATENCY_LABELS), left_closed=True)
        .cast(pl.String)
        .alias("latency_bucket"),
        (is_empty | is_refusal | (tool_errors > 0)).alias("deterministic_low_score"),
    ]


def with_conversation_context(traces: pl.DataFrame) -> pl.DataFrame:
    """The previous turn of the same conversation, so a judge or an annotator sees what came before."""
    previous = pl.format("User: {}\nAgent: {}", "user_message", "agent_response")
    return traces.sort("conversation_id", "turn_index").with_columns(
        previous.shift(1).over("conversation_id").fill_null("").alias("conversation_context")
    )
