"""Message shapes flattened to text: the last user message of an input, the final text of an output.

Knows OpenAI chat messages, OTel GenAI `parts`, Anthropic content blocks, LangChain
`type: human/ai` and serialized `HumanMessage`s, Gemini `parts`, OpenInference
flattened `llm.input_messages.N.message.*` and legacy `gen_ai.prompt.N.*` keys,
deprecated GenAI events, plain strings and JSON-encoded strings. Pure Python over
one turn's candidate values (called once per turn, not per span); which span's
values are candidates is `assemble.py`'s choice.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ROLES = {"human": "user", "humanmessage": "user", "user": "user", "ai": "assistant", "aimessage": "assistant",
          "assistant": "assistant", "model": "assistant", "bot": "assistant", "system": "system",
          "systemmessage": "system", "developer": "system", "tool": "tool", "toolmessage": "tool",
          "function": "tool", "chatmessage": None}
_EVENT_ROLES = {"gen_ai.user.message": "user", "gen_ai.system.message": "system",
                "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool", "gen_ai.choice": "assistant"}
_INDEXED = re.compile(r"^(llm\.(?:input|output)_messages|gen_ai\.(?:prompt|completion))\.(\d+)\.(.+)$")
_TEXT_KEYS = ("text", "content", "output_text", "value")
_INPUT_KEYS = ("messages", "contents", "input", "question", "query", "prompt", "user_message", "user_input", "inputs", "text",
               "content", "message", "human_input", "chat_input")
_OUTPUT_KEYS = ("output", "answer", "response", "result", "text", "content", "message", "messages", "outputs",
                "generations", "choices", "agent_response", "final_output", "return_values")


def decoded(value: Any) -> Any:
    """A JSON text (an object or array held in a string) as the value it encodes."""
    if isinstance(value, str) and value[:1] in "[{" and value.rstrip()[-1:] in "]}":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def text_of(content: Any) -> str | None:
    """The text of a message's content: a string, a list of parts/blocks, or a part."""
    content = decoded(content)
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, (int, float, bool)):
        return json.dumps(content)
    if isinstance(content, list):
        texts = [t for t in (_part_text(p) for p in content) if t]
        return "\n".join(texts) if texts else None
    if isinstance(content, dict):
        return _part_text(content)
    return None


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return None
    kind = part.get("type") or part.get("message_content.type")
    if kind not in (None, "text", "output_text", "input_text"):
        return None  # tool calls, images, reasoning: not the answer's text
    for key in ("text", "content", "message_content.text", "value"):
        if isinstance(part.get(key), str):
            return part[key]
    if "parts" in part:
        return text_of(part["parts"])
    return None


def role_of(message: dict) -> str | None:
    raw = (message.get("role") or message.get("message.role") or message.get("type")
           or message.get("author") or message.get("sender"))
    if raw is None and isinstance(message.get("id"), list) and message["id"]:  # serialized LangChain message
        raw = message["id"][-1]
    return _ROLES.get(str(raw).lower(), None) if raw is not None else None


def _message_text(message: dict) -> str | None:
    if isinstance(message.get("kwargs"), dict):  # {"lc": 1, "type": "constructor", "kwargs": {...}}
        return text_of(message["kwargs"].get("content"))
    if isinstance(message.get("data"), dict):  # LangChain message_to_dict: {"type": "human", "data": {...}}
        return text_of(message["data"].get("content"))
    for key in ("content", "parts", "message.content", "text"):
        if key in message:
            text = text_of(message[key])
            if text is not None:
                return text
    contents = [v for k, v in sorted(message.items()) if k.startswith("message.contents.") and k.endswith(".text")]
    return "\n".join(contents) if contents else None


_CONTENT_KEYS = ("content", "parts", "kwargs", "data", "message.content", "text")


def _message(value: dict) -> tuple[str | None, str | None] | None:
    """(role, text) when the dict is a message (any shape above), else None."""
    if isinstance(value.get("kwargs"), dict) and isinstance(value.get("id"), list):
        return role_of(value), _message_text(value)
    inner = value.get("message")
    if isinstance(inner, dict):  # an OpenAI choice / gen_ai.choice body
        return role_of(inner) or "assistant", _message_text(inner)
    role = role_of(value)
    if role is None and "message.role" not in value:
        return None
    if any(k in value for k in _CONTENT_KEYS) or any(k.startswith("message.contents.") for k in value):
        return role, _message_text(value)
    return None


def messages_of(value: Any) -> list[tuple[str | None, str | None]]:
    """(role, text) of every message a value holds, in order (empty when it holds none)."""
    value = decoded(value)
    if isinstance(value, dict):
        found = _message(value)
        return [found] if found else []
    if isinstance(value, list):
        out: list[tuple[str | None, str | None]] = []
        for item in value:
            item = decoded(item)
            if isinstance(item, dict):
                found = _message(item)
                if found:
                    out.append(found)
            elif isinstance(item, list):  # LangSmith chat inputs: [[message, ...]]
                out += messages_of(item)
        return out
    return []


def indexed_messages(flat: dict | None, prefix: str) -> list[tuple[str | None, str | None]]:
    """Messages from flattened keys `<prefix>.N.<field>` (OpenInference, legacy GenAI), by N."""
    by_index: dict[int, dict] = {}
    for key, value in (flat or {}).items():
        match = _INDEXED.match(key)
        if match and match.group(1) == prefix:
            by_index.setdefault(int(match.group(2)), {})[match.group(3)] = value
    out = []
    for _, fields in sorted(by_index.items()):
        fields = {k.removeprefix("message."): v for k, v in fields.items()}
        text = text_of(fields.get("content"))
        if text is None:
            parts = [v for k, v in sorted(fields.items()) if k.startswith("contents.") and k.endswith(".text")]
            text = "\n".join(parts) if parts else None
        out.append((_ROLES.get(str(fields.get("role", "")).lower()), text))
    return out


_OUTPUT_EVENTS = ("gen_ai.choice", "gen_ai.content.completion")


def event_messages(events: list | None, side: str = "input") -> list[tuple[str | None, str | None]]:
    """Messages from the deprecated GenAI events (`gen_ai.user.message`, `gen_ai.choice`, ...):
    the input's (history) or the output's (choices)."""
    out = []
    for event in events or []:
        if (event.get("name") in _OUTPUT_EVENTS) != (side == "output"):
            continue
        role = _EVENT_ROLES.get(event.get("name"))
        attrs = event.get("attrs") or {}
        if event.get("name") in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            out += messages_of(attrs.get("gen_ai.prompt") or attrs.get("gen_ai.completion"))
            continue
        if role is None:
            continue
        body = decoded(attrs.get("gen_ai.event.content") or attrs.get("body") or attrs.get("event.body"))
        if isinstance(body, dict):
            attrs = {**attrs, **body}
        message = decoded(attrs.get("message"))
        if isinstance(message, dict):
            out.append((role_of(message) or role, _message_text(message)))
            continue
        content = attrs.get("content", attrs.get("message.content"))
        out.append((role_of(attrs) if "role" in attrs else role, text_of(content)))
    return out


def _candidates(io: dict, side: str):
    """The message lists a span's values hold, in the order they are trusted; lazily, so the
    common case (one attribute set) decodes one value."""
    prefixes = ("llm.input_messages", "gen_ai.prompt") if side == "input" else ("llm.output_messages", "gen_ai.completion")
    if io.get("messages") is not None:
        yield messages_of(io["messages"])
    if io.get("indexed") is not None:
        flat = decoded(io["indexed"])
        yield indexed_messages(flat, prefixes[0])
        yield indexed_messages(flat, prefixes[1])
    if io.get("list") is not None:
        yield messages_of(io["list"])
    if io.get("events") is not None:
        yield event_messages(decoded(io["events"]), side)


def user_message(io: dict | None) -> str | None:
    """The last user message of a span's input values (None when there is none)."""
    if not io:
        return None
    for messages in _candidates(io, "input"):
        users = [text for role, text in messages if role == "user" and text is not None]
        if users:
            return users[-1]
    return _last_user_in(io.get("value"))


def _last_user_in(value: Any, depth: int = 0) -> str | None:
    value = decoded(value)
    if depth > 4 or value is None:
        return None
    if isinstance(value, str):
        return value
    users = [text for role, text in messages_of(value) if role == "user" and text is not None]
    if users:
        return users[-1]
    if isinstance(value, dict):
        for key in _INPUT_KEYS:
            if key in value:
                found = _last_user_in(value[key], depth + 1)
                if found is not None:
                    return found
    return None


def final_text(io: dict | None) -> str | None:
    """The final answer text of a span's output values (None when there is none)."""
    if not io:
        return None
    for messages in _candidates(io, "output"):
        answers = [text for role, text in messages if role in ("assistant", None) and text]
        if answers:
            return answers[-1]
    return _answer_in(io.get("value"))


def _answer_in(value: Any, depth: int = 0) -> str | None:
    value = decoded(value)
    if depth > 5 or value is None:
        return None
    if isinstance(value, str):
        return value
    answers = [text for role, text in messages_of(value) if role in ("assistant", None) and text]
    if answers:
        return answers[-1]
    if isinstance(value, list):
        for item in reversed(value):
            found = _answer_in(item, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for key in _OUTPUT_KEYS:
            if key in value:
                found = _answer_in(value[key], depth + 1)
                if found is not None:
                    return found
    return None
