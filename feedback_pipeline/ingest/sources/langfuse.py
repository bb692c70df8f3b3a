"""Langfuse exports -> rows of `src_spans` and `src_scores`.

Two shapes: a trace as downloaded from the UI / public API (camelCase `trace` with
`observations` and `scores`, also a list or an API page `{"data": [...]}`), and the
blob-storage export tables `traces`, `observations`, `scores` (snake_case; JSONL,
CSV with JSON held in strings, or Parquet). The trace itself is the root span;
observations are its children; their fields are renamed to OpenInference keys so
`features.py` reads them like any span.
"""

from __future__ import annotations

import duckdb

# observation type -> OpenInference span kind
_KINDS = """CASE upper(o->>'type') WHEN 'GENERATION' THEN 'LLM' WHEN 'TOOL' THEN 'TOOL' WHEN 'AGENT' THEN 'AGENT'
    WHEN 'RETRIEVER' THEN 'RETRIEVER' WHEN 'EMBEDDING' THEN 'EMBEDDING' WHEN 'EVALUATOR' THEN 'EVALUATOR'
    WHEN 'GUARDRAIL' THEN 'GUARDRAIL' ELSE 'CHAIN' END"""


def _pick(obj: str, *names: str) -> str:
    return "coalesce(" + ", ".join(f"{obj}->'{n}'" for n in names) + ")"


def _map(**entries: str) -> str:
    """MAP of the non-null entries (key -> JSON expression)."""
    items = ", ".join(f"{{'k': '{k.replace('__', '.')}', 'v': ({v})::JSON}}" for k, v in entries.items())
    return (f"map_from_entries(list_transform(list_filter([{items}], x -> x.v IS NOT NULL AND json_type(x.v) <> 'NULL'), "
            "x -> {'k': x.k, 'v': src_text(x.v)}))")


def convert(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _lf_docs AS
        SELECT source_file, source_line, pos_kind,
               unnest(CASE WHEN json_type(doc) = 'OBJECT' AND json_type(doc->'data') = 'ARRAY'
                           THEN from_json(doc->'data', '["JSON"]') ELSE [doc] END) AS d
        FROM src_rows WHERE kind = 'langfuse_api'
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _lf_traces AS
        SELECT source_file, source_line, pos_kind, coalesce(d->'trace', d) AS t FROM _lf_docs
        UNION ALL SELECT source_file, source_line, pos_kind, doc FROM src_rows WHERE kind = 'langfuse_traces'
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _lf_obs AS
        WITH nested AS (
            SELECT source_file, source_line, pos_kind, coalesce(d->'trace'->'id', d->'id') AS trace_ref,
                   unnest(from_json(coalesce(d->'observations', d->'trace'->'observations', '[]'), '["JSON"]')) AS o
            FROM _lf_docs
        )
        SELECT source_file, source_line, pos_kind, trace_ref, o FROM nested WHERE json_type(o) = 'OBJECT'
        UNION ALL SELECT source_file, source_line, pos_kind, NULL, doc FROM src_rows WHERE kind = 'langfuse_observations'
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _lf_scores AS
        WITH nested AS (
            SELECT source_file, source_line, pos_kind, coalesce(d->'trace'->'id', d->'id') AS trace_ref,
                   unnest(from_json(coalesce(d->'scores', d->'trace'->'scores', '[]'), '["JSON"]')) AS s
            FROM _lf_docs
        )
        SELECT source_file, source_line, pos_kind, trace_ref, s FROM nested WHERE json_type(s) = 'OBJECT'
        UNION ALL SELECT source_file, source_line, pos_kind, NULL, doc FROM src_rows WHERE kind = 'langfuse_scores'
    """)
    root_attrs = _map(
        input__value=f"src_unquote({_pick('t', 'input')})", output__value=f"src_unquote({_pick('t', 'output')})",
        session__id=_pick("t", "sessionId", "session_id"), user__id=_pick("t", "userId", "user_id"),
        metadata=f"src_unquote({_pick('t', 'metadata')})", tag__tags=f"src_unquote({_pick('t', 'tags')})",
        langfuse__extra="json_object('release', t->'release', 'version', t->'version', "
                        "'environment', t->'environment')")
    con.execute(f"""
        INSERT INTO src_spans BY NAME
        SELECT 'langfuse' AS source_format, source_file, source_line, pos_kind,
               src_id(t->'id') AS trace_id, src_id(t->'id') AS span_id, NULL AS parent_id,
               t->>'id' AS source_trace_id, t->>'id' AS source_span_id, t->>'name' AS name,
               src_ns(t->'timestamp') AS start_ns,
               CASE WHEN TRY_CAST(t->>'latency' AS DOUBLE) IS NOT NULL
                    THEN src_ns(t->'timestamp') + CAST(TRY_CAST(t->>'latency' AS DOUBLE) * 1e9 AS BIGINT) END AS end_ns,
               FALSE AS is_error, {root_attrs} AS attrs
        FROM _lf_traces
    """)
    obs_attrs = _map(
        openinference__span__kind=f"to_json({_KINDS})",
        input__value=f"src_unquote({_pick('o', 'input')})", output__value=f"src_unquote({_pick('o', 'output')})",
        llm__model_name=_pick("o", "model", "providedModelName", "provided_model_name", "internal_model"),
        metadata=f"src_unquote({_pick('o', 'metadata')})")
    con.execute(f"""
        INSERT INTO src_spans BY NAME
        SELECT 'langfuse' AS source_format, source_file, source_line, pos_kind,
               src_id(coalesce({_pick('o', 'traceId', 'trace_id')}, trace_ref)) AS trace_id,
               src_id(o->'id') AS span_id,
               coalesce(src_id({_pick('o', 'parentObservationId', 'parent_observation_id')}),
                        src_id(coalesce({_pick('o', 'traceId', 'trace_id')}, trace_ref))) AS parent_id,
               coalesce({_pick('o', 'traceId', 'trace_id')}, trace_ref)->>'$' AS source_trace_id,
               o->>'id' AS source_span_id, o->>'name' AS name,
               src_ns({_pick('o', 'startTime', 'start_time')}) AS start_ns,
               src_ns({_pick('o', 'endTime', 'end_time')}) AS end_ns,
               coalesce(upper(o->>'level') = 'ERROR', FALSE) AS is_error,
               {_pick('o', 'statusMessage', 'status_message')}->>'$' AS status_message, {obs_attrs} AS attrs
        FROM _lf_obs
    """)
    value = """CASE WHEN upper(coalesce(s->>'dataType', s->>'data_type', '')) = 'CATEGORICAL'
                    THEN to_json(coalesce(s->>'stringValue', s->>'string_value', s->>'value'))
                    WHEN TRY_CAST(s->>'value' AS DOUBLE) IS NOT NULL THEN to_json(TRY_CAST(s->>'value' AS DOUBLE))
                    ELSE to_json(coalesce(s->>'stringValue', s->>'string_value', s->>'value')) END"""
    con.execute(f"""
        INSERT INTO src_scores BY NAME
        SELECT 'langfuse' AS source_format, source_file, source_line, pos_kind,
               src_id(coalesce({_pick('s', 'traceId', 'trace_id')}, trace_ref)) AS trace_id,
               src_id({_pick('s', 'observationId', 'observation_id')}) AS span_id,
               s->>'name' AS name, {value} AS value, s->>'comment' AS comment,
               CASE WHEN upper(s->>'source') = 'EVAL' THEN 'evaluator' ELSE 'feedback' END AS origin,
               src_ns(coalesce(s->'timestamp', s->'created_at', s->'createdAt')) AS ns
        FROM _lf_scores
    """)
    for table in ("_lf_docs", "_lf_traces", "_lf_obs", "_lf_scores"):
        con.execute(f"DROP TABLE {table}")
