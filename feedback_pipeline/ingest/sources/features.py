"""What a span's attributes mean: SQL expressions over its attribute map (GenAI semconv + OpenInference).

Every format module fills `src_spans.attrs` with OTel GenAI / OpenInference keys
(Langfuse and LangSmith fields are renamed to them), so this is the one place that
says which key gives the span kind, model, conversation, agent, user and the
input/output values. Choosing the turn's span and folding its children is
`assemble.py`'s job.
"""

from __future__ import annotations


def s(key: str) -> str:
    """SQL: the attribute as text (a JSON string unquoted), NULL when missing or empty."""
    return f"nullif(attrs['{key}'], '')"


def first(*keys: str) -> str:
    return "coalesce(" + ", ".join(s(k) for k in keys) + ")"


SPAN_KIND = f"""lower(coalesce({s('openinference.span.kind')}, CASE {s('gen_ai.operation.name')}
    WHEN 'chat' THEN 'llm' WHEN 'text_completion' THEN 'llm' WHEN 'generate_content' THEN 'llm'
    WHEN 'completion' THEN 'llm' WHEN 'execute_tool' THEN 'tool' WHEN 'invoke_agent' THEN 'agent'
    WHEN 'create_agent' THEN 'agent' WHEN 'embeddings' THEN 'embedding' END))"""
MODEL = first("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
CONVERSATION = first("gen_ai.conversation.id", "session.id")
AGENT = first("gen_ai.agent.name", "gen_ai.agent.id")
USER = first("user.id", "enduser.id")
SERVICE = f"coalesce(service, {s('service.name')})"
TOOL_NAME = f"coalesce({first('gen_ai.tool.name', 'tool.name')}, name)"
OPERATION = s("gen_ai.operation.name")


def _indexed(*prefixes: str) -> str:
    cond = " OR ".join(f"starts_with(e.key, '{p}.')" for p in prefixes)
    return f"nullif(to_json(map_from_entries(list_filter(map_entries(attrs), e -> {cond}))), '{{}}')::VARCHAR"


# The values a span's input / output can be read from, as raw text (`messages.py` decodes
# each at most once, and only until one holds the message it looks for).
INPUT_IO = {"messages": "attrs['gen_ai.input.messages']", "list": "attrs['llm.input_messages']",
            "indexed": _indexed("llm.input_messages", "gen_ai.prompt"), "events": "events::VARCHAR",
            "value": "attrs['input.value']"}
OUTPUT_IO = {"messages": "attrs['gen_ai.output.messages']", "list": "attrs['llm.output_messages']",
             "indexed": _indexed("llm.output_messages", "gen_ai.completion"), "events": "events::VARCHAR",
             "value": "attrs['output.value']"}
# Root attributes kept with the turn (in `extra`).
CONTEXT = """nullif(to_json(map_from_entries(list_filter([
    {'k': 'metadata', 'v': src_json_text(attrs['metadata'])}, {'k': 'tags', 'v': src_json_text(attrs['tag.tags'])},
    {'k': 'operation', 'v': to_json(attrs['gen_ai.operation.name'])},
    {'k': 'system_instructions', 'v': src_json_text(attrs['gen_ai.system_instructions'])},
    {'k': 'langfuse', 'v': src_json_text(attrs['langfuse.extra'])},
    {'k': 'langsmith', 'v': src_json_text(attrs['langsmith.extra'])}],
    x -> x.v IS NOT NULL))), '{}')"""
# `gen_ai.evaluation.result` span events -> score rows (an automated evaluator's).
EVALUATIONS = """list_transform(list_filter(coalesce(from_json(events, '["JSON"]'), []),
        e -> json_extract_string(e, '$.name') = 'gen_ai.evaluation.result'),
    e -> {'name': json_extract_string(e, '$.attrs."gen_ai.evaluation.name"'),
          'value': coalesce(to_json(TRY_CAST(json_extract_string(e, '$.attrs."gen_ai.evaluation.score.value"') AS DOUBLE)),
                            json_extract(e, '$.attrs."gen_ai.evaluation.score.label"')),
          'label': json_extract_string(e, '$.attrs."gen_ai.evaluation.score.label"'),
          'comment': json_extract_string(e, '$.attrs."gen_ai.evaluation.explanation"'),
          'ns': TRY_CAST(json_extract_string(e, '$.ns') AS BIGINT)})"""
