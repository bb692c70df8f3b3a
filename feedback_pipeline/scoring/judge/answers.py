"""Reading what the judge endpoint answered: the completion's fields and the verdict's contract.

Pure functions over text; they never raise. Making the call is `calls.py`'s.
"""

import json
import re
from collections.abc import Sequence

MAX_RATIONALE_CHARS = 2000


def completion_fields(text: str) -> tuple[str | None, int, int]:
    """(message content, prompt tokens, completion tokens) of a chat completion's JSON;
    (None, 0, 0) for a body that is not one."""
    try:
        completion = json.loads(text)
        content = completion["choices"][0]["message"]["content"]
        usage = completion.get("usage") or {}
        return (content if isinstance(content, str) else None,
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    except (ValueError, LookupError, TypeError, AttributeError):
        return None, 0, 0


def parse_answer(content: str | None, categories: Sequence[str]) -> tuple[dict | None, str | None]:
    """(answer, None) for a valid judge answer, else (None, why it is invalid)."""
    text = (content or "").strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    elif "{" in text:
        text = text[text.find("{"): text.rfind("}") + 1]
    try:
        obj = json.loads(text)
    except ValueError:
        return None, f"not JSON: {(content or '')[:60]!r}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    verdict = str(obj.get("verdict", "")).strip().lower()
    category = obj.get("failure_category")
    if isinstance(category, str) and category.strip().lower() in ("", "none", "null"):
        category = None
    rationale = obj.get("rationale")
    if verdict not in ("pass", "fail"):
        return None, f"verdict {str(obj.get('verdict'))[:40]!r} is not pass/fail"
    if verdict == "fail" and category not in categories:
        return None, f"failure_category {str(category)[:40]!r} is not a rubric category"
    if verdict == "pass" and category is not None:
        return None, "a pass must have failure_category null"
    if not isinstance(rationale, str):
        return None, "rationale missing"
    return {"verdict": verdict, "failure_category": category,
            "rationale": rationale[:MAX_RATIONALE_CHARS]}, None
