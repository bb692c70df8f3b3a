"""Scores and feedback records mapped to the contract's signals (thumbs, escalation, rewrite).

A configurable map (`config.py`) names which score names / feedback keys mean which
signal. Scores from an automated evaluator (Langfuse `EVAL`, LangSmith `model`
feedback, OTel `gen_ai.evaluation.result`) never become user feedback: they are kept
apart, under `evaluations`; every other unmapped score is kept under `scores`.
Nothing is dropped. Pure Python over one turn's scores.
"""

from __future__ import annotations

from typing import Any

from feedback_pipeline.ingest.contract import ESCALATION_REASONS

_UP = {"up", "thumbs_up", "thumbsup", "positive", "good", "true", "yes", "like", "1", "👍", "+1"}
_DOWN = {"down", "thumbs_down", "thumbsdown", "negative", "bad", "false", "no", "dislike", "0", "-1", "👎"}
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}


def thumbs_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "up" if value else "down"
    if isinstance(value, (int, float)):
        return "up" if value > 0 else "down"
    if isinstance(value, str):
        text = value.strip().lower()
        return "up" if text in _UP else "down" if text in _DOWN else None
    return None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value > 0
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def map_feedback(scores: list[dict], names: dict[str, tuple[str, ...]]) -> tuple[dict, dict]:
    """(the contract's `feedback` object, extra fields) from one turn's scores, oldest first."""
    feedback: dict[str, Any] = {"thumbs": None, "escalated": False, "escalation_reason": None, "user_rewrote": False}
    if not scores:
        return feedback, {}
    kept, evaluations, extra = [], [], {}
    lookup = {name.lower(): signal for signal, group in names.items() for name in group}
    for score in scores:
        shown = {k: v for k, v in score.items() if v is not None and k != "origin"}
        if score.get("origin") == "evaluator":
            evaluations.append(shown)
            continue
        signal = lookup.get(str(score.get("name", "")).lower())
        value = score.get("value")
        if signal == "thumbs" and thumbs_of(value) is not None:
            feedback["thumbs"] = thumbs_of(value)
        elif signal == "user_rewrote" and _flag(value) is not None:
            feedback["user_rewrote"] = _flag(value)
        elif signal == "escalation" and value is not None:
            flag = _flag(value)
            if flag is not None:
                feedback["escalated"], feedback["escalation_reason"] = flag, None
            else:
                reason = str(value).strip().lower().replace(" ", "_").replace("-", "_")
                feedback["escalated"] = True
                feedback["escalation_reason"] = reason if reason in ESCALATION_REASONS else "other"
                if reason not in ESCALATION_REASONS:
                    extra["escalation_label"] = value
        else:
            kept.append(shown)
        if signal and score.get("comment"):
            extra[f"{signal}_comment"] = score["comment"]
    if kept:
        extra["scores"] = kept
    if evaluations:
        extra["evaluations"] = evaluations
    return feedback, extra
