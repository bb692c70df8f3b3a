"""Column names of `automated_scores` that later stages (sampling, impact) read.

Constants only: one place that says what a score row holds.
"""

# Columns copied from raw_traces so downstream stages need not join back.
CARRIED_FROM_TRACES = (
    "week", "trace_id", "conversation_id", "turn_index", "timestamp", "agent_id",
    "user_id", "channel", "intent", "prompt_version", "retrieval_version", "model",
    "thumbs", "escalated", "escalation_reason", "user_rewrote", "latency_ms",
)
# Deterministic scorers (vectorized, every trace).
DETERMINISTIC = (
    "response_chars", "response_words", "is_empty", "is_refusal", "has_disclaimer",
    "tool_call_count", "tool_error_count", "latency_bucket", "deterministic_low_score",
)
# LLM judge (null when not judged). judge_selection_prob is the probability that
# this trace was sent to the judge (1.0 when all traffic is judged).
JUDGE = (
    "judge_verdict", "judge_failure_category", "judge_rationale", "judge_error",
    "judge_selection_prob", "judge_rubric_id", "judge_rubric_version",
    "judge_rubric_hash", "judge_model", "judge_prompt_hash", "judge_cached",
)
