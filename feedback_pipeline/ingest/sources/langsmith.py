"""LangSmith runs (listed or bulk-exported) and feedback records -> rows of `src_spans` / `src_scores`.

A run is a span: `id`, `trace_id` (else the first id of `dotted_order`, else its own id
for a root), `parent_run_id`, `run_type`, `inputs` / `outputs`, `extra.metadata`,
`error`. The conversation comes from `extra.metadata.thread_id | session_id |
conversation_id` (LangSmith's top-level `session_id` is the project, kept in extra).
Feedback (`run_id`, `key`, `score` / `value`, `comment`, `feedback_source`) becomes scores;
a `model` feedback source is an automated evaluator's.
"""

from __future__ import annotations

import duckdb

from feedback_pipeline.ingest.sources.langfuse import _map, _pick

_META = "src_unquote(r->'extra')->'metadata'"
_TRACE = ("coalesce(src_id(r->'trace_id'), src_id(to_json(regexp_extract(r->>'dotted_order', "
          "'^[0-9]{8}T[0-9]+Z([0-9a-fA-F-]{32,36})', 1))), CASE WHEN r->>'parent_run_id' IS NULL "
          "THEN src_id(r->'id') END)")


def convert(con: duckdb.DuckDBPyConnection) -> None:
    attrs = _map(
        openinference__span__kind="to_json(upper(r->>'run_type'))",
        input__value="src_unquote(r->'inputs')", output__value="src_unquote(r->'outputs')",
        session__id=f"coalesce({_META}->'thread_id', {_META}->'session_id', {_META}->'conversation_id')",
        user__id=f"coalesce({_META}->'user_id', {_META}->'userId')",
        llm__model_name=f"coalesce({_META}->'ls_model_name', src_unquote(r->'extra')->'invocation_params'->'model', "
                        "src_unquote(r->'extra')->'invocation_params'->'model_name')",
        gen_ai__agent__name=f"coalesce({_META}->'agent_name', {_META}->'lc_agent_name')",
        metadata=_META, tag__tags="src_unquote(r->'tags')",
        langsmith__extra="json_object('project_id', r->'session_id', 'status', r->'status', 'error', r->'error')")
    con.execute(f"""
        INSERT INTO src_spans BY NAME
        SELECT 'langsmith' AS source_format, source_file, source_line, pos_kind,
               {_TRACE} AS trace_id, src_id(r->'id') AS span_id, src_id(r->'parent_run_id') AS parent_id,
               coalesce(r->>'trace_id', {_TRACE}) AS source_trace_id, r->>'id' AS source_span_id,
               r->>'name' AS name, src_ns(r->'start_time') AS start_ns, src_ns(r->'end_time') AS end_ns,
               coalesce(nullif(r->>'error', '') IS NOT NULL OR lower(r->>'status') = 'error', FALSE) AS is_error,
               r->>'error' AS status_message, {attrs} AS attrs
        FROM (SELECT source_file, source_line, pos_kind, unnest(CASE WHEN json_type(doc) = 'ARRAY'
                     THEN from_json(doc, '["JSON"]') ELSE [doc] END) AS r
              FROM src_rows WHERE kind = 'langsmith_runs')
    """)
    source = "lower(coalesce(f->'feedback_source'->>'type', f->>'feedback_source_type', f->>'feedback_source', ''))"
    con.execute(f"""
        INSERT INTO src_scores BY NAME
        WITH fb AS (
            SELECT source_file, source_line, pos_kind, unnest(CASE WHEN json_type(doc) = 'ARRAY'
                   THEN from_json(doc, '["JSON"]') ELSE [doc] END) AS f
            FROM src_rows WHERE kind = 'langsmith_feedback'
        ), runs AS (SELECT span_id, any_value(trace_id) AS trace_id FROM src_spans
                    WHERE source_format = 'langsmith' GROUP BY span_id)
        SELECT 'langsmith' AS source_format, fb.source_file, fb.source_line, fb.pos_kind,
               coalesce(src_id(f->'trace_id'), runs.trace_id, src_id(f->'run_id')) AS trace_id,
               src_id(f->'run_id') AS span_id, f->>'key' AS name,
               coalesce(CASE WHEN json_type(f->'score') <> 'NULL' THEN f->'score' END, src_unquote(f->'value')) AS value,
               f->>'comment' AS comment,
               CASE WHEN {source} IN ('model', 'auto_eval', 'evaluator') THEN 'evaluator' ELSE 'feedback' END AS origin,
               src_ns(coalesce(f->'created_at', f->'modified_at')) AS ns
        FROM fb LEFT JOIN runs ON runs.span_id = src_id(f->'run_id')
    """)
