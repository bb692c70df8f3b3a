"""Spans of every export -> one row per trace: its root (the turn), folded children, held or orphaned.

SQL over `src_spans` / `src_scores` (filled by the format modules): drop spans with no
usable id or time (to `src_bad`), keep the first copy of a re-exported span, find
each trace's root across all files read, and fold its children into the turn's
tool calls, model, conversation, agent and user. Reading text out of messages and
writing contract records is `turns.py`'s job.
"""

from __future__ import annotations

import duckdb

from feedback_pipeline.ingest.sources import features as f

SPAN_COLUMNS = """source_format VARCHAR, source_file VARCHAR, source_line BIGINT, pos_kind VARCHAR,
    trace_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, source_trace_id VARCHAR, source_span_id VARCHAR,
    name VARCHAR, start_ns BIGINT, end_ns BIGINT, is_error BOOLEAN, status_message VARCHAR, service VARCHAR,
    attrs MAP(VARCHAR, VARCHAR), events JSON"""
SCORE_COLUMNS = """source_format VARCHAR, source_file VARCHAR, source_line BIGINT, pos_kind VARCHAR,
    trace_id VARCHAR, span_id VARCHAR, name VARCHAR, value JSON, comment VARCHAR, origin VARCHAR, ns BIGINT"""


def create_span_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE src_spans ({SPAN_COLUMNS})")
    con.execute(f"CREATE OR REPLACE TEMP TABLE src_scores ({SCORE_COLUMNS})")


def assemble(con: duckdb.DuckDBPyConnection) -> None:
    """Leaves `spans` (every usable span, with uid and copy_no), `feats` (first copies, with
    meanings), `traces` (one row per trace: root, folded values) and `scores_by_trace`."""
    con.execute("""
        INSERT INTO src_bad
        SELECT source_file, source_line, pos_kind,
               'span ' || coalesce('''' || name || '''', '(no name)') || coalesce(' ' || source_span_id, '')
               || ' has no usable ' || CASE WHEN trace_id IS NULL THEN 'trace id'
                                            WHEN span_id IS NULL THEN 'span id' ELSE 'start time' END
               || '; ids must be hex, base64 or byte arrays and times nanoseconds, {low, high}, '
               || '[sec, nanos] or ISO-8601 (fix the exporter and re-send the trace)',
               left(json_object('trace_id', source_trace_id, 'span_id', source_span_id, 'name', name)::VARCHAR, 2000)
        FROM src_spans WHERE trace_id IS NULL OR span_id IS NULL OR start_ns IS NULL
    """)
    # The span rows stay where the format modules wrote them (`uid` is their rowid); only
    # the narrow copy numbers are computed: copying every attribute map cost more than typing it.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE span_copies AS
        SELECT rowid AS uid, row_number() OVER (PARTITION BY source_format, trace_id, span_id
                                                ORDER BY source_file, source_line) AS copy_no
        FROM src_spans WHERE trace_id IS NOT NULL AND span_id IS NOT NULL AND start_ns IS NOT NULL
    """)
    con.execute("CREATE OR REPLACE TEMP VIEW spans AS "
                "SELECT c.uid, c.copy_no, s.* FROM span_copies c JOIN src_spans s ON s.rowid = c.uid")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE feats AS
        SELECT c.uid, source_format, trace_id, span_id, nullif(parent_id, span_id) AS parent_id, name,
               start_ns, end_ns, is_error, source_file,
               {f.SPAN_KIND} AS span_kind, {f.MODEL} AS model, {f.CONVERSATION} AS conversation,
               {f.AGENT} AS agent, {f.USER} AS user_id, {f.SERVICE} AS service, {f.TOOL_NAME} AS tool_name,
               CASE WHEN events IS NOT NULL THEN {f.EVALUATIONS} END AS evaluations,
               start_ns // 1000 + CASE WHEN nullif(parent_id, span_id) IS NULL THEN 0
                                       ELSE 100000000000000000 END AS root_first
        FROM src_spans s JOIN span_copies c ON s.rowid = c.uid WHERE c.copy_no = 1
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE traces AS
        SELECT source_format, trace_id,
               arg_min(uid, start_ns) FILTER (WHERE parent_id IS NULL) AS root_uid,
               min(start_ns) AS first_ns, max(end_ns) AS last_end_ns, count(*) AS n_spans,
               list({'name': tool_name, 'status': CASE WHEN is_error THEN 'error' ELSE 'ok' END,
                     'latency_ms': greatest(coalesce(end_ns - start_ns, 0) // 1000000, 0)} ORDER BY start_ns)
                   FILTER (WHERE span_kind = 'tool') AS tool_calls,
               coalesce(arg_max(model, end_ns) FILTER (WHERE span_kind = 'llm' AND model IS NOT NULL),
                        arg_min(model, root_first) FILTER (WHERE model IS NOT NULL)) AS model,
               arg_min(uid, start_ns) FILTER (WHERE span_kind = 'llm') AS first_llm,
               arg_max(uid, end_ns) FILTER (WHERE span_kind = 'llm') AS last_llm,
               arg_min(conversation, root_first) FILTER (WHERE conversation IS NOT NULL)
                   AS conversation,
               coalesce(arg_min(agent, root_first) FILTER (WHERE agent IS NOT NULL),
                        arg_min(regexp_replace(name, '^(invoke_agent|create_agent) ', ''), start_ns)
                            FILTER (WHERE span_kind = 'agent'),
                        arg_min(service, root_first) FILTER (WHERE service IS NOT NULL))
                   AS agent,
               arg_min(user_id, root_first) FILTER (WHERE user_id IS NOT NULL) AS user_id,
               flatten(list(evaluations) FILTER (WHERE len(evaluations) > 0)) AS evaluations
        FROM feats GROUP BY ALL
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE scores_by_trace AS
        SELECT source_format, trace_id,
               to_json(list({'name': name, 'value': value, 'comment': comment, 'origin': origin, 'span_id': span_id}
                            ORDER BY ns NULLS FIRST, source_file, source_line)) AS scores,
               min(ns) AS first_ns
        FROM src_scores GROUP BY ALL
    """)


# Keys of a trace's metadata that name contract fields (else the metadata stays in `extra`).
FROM_METADATA = ("vertical", "channel", "intent", "prompt_version", "retrieval_version")
IO_SQL = ", ".join([f"{sql} AS in_{k}" for k, sql in f.INPUT_IO.items() if k != "events"]
                   + [f"{sql} AS out_{k}" for k, sql in f.OUTPUT_IO.items()])
# (alias, side): the root's input and output, the first LLM call's input, the last one's output.
IO_SOURCES = (("r", "in"), ("r", "out"), ("a", "in"), ("b", "out"))


def _io_columns() -> str:
    cols = []
    for alias, side in IO_SOURCES:
        keys = f.INPUT_IO if side == "in" else f.OUTPUT_IO
        cols += [f"{alias}.{'out' if k == 'events' else side}_{k} AS {alias}_{side}_{k}" for k in keys]
    return ", ".join(cols)


def turns_sql() -> str:
    """SELECT: one row per copy of each trace's root (a re-exported trace yields a
    duplicate record), with everything `turns.py` needs."""
    return f"""
        WITH ranked AS (
            SELECT t.*, r.span_id AS root_span, r.start_ns, coalesce(r.end_ns, t.last_end_ns) AS end_ns,
                   coalesce(t.conversation, t.trace_id) AS conversation_id
            FROM traces t JOIN feats r ON r.uid = t.root_uid
        ), numbered AS (
            SELECT *, row_number() OVER (PARTITION BY source_format, conversation_id
                                         ORDER BY start_ns, trace_id) - 1 AS turn_index
            FROM ranked
        ), needed AS (
            SELECT root_uid AS uid FROM ranked UNION SELECT first_llm FROM ranked UNION SELECT last_llm FROM ranked
        ), io AS (
            SELECT n.uid, name, {IO_SQL}, {f.CONTEXT} AS context,
                   {", ".join(f"json_extract_string(src_json_text(attrs['metadata']), '$.{k}') AS meta_{k}"
                              for k in FROM_METADATA)}
            FROM src_spans s JOIN needed n ON s.rowid = n.uid
        )
        SELECT n.source_format, n.trace_id, n.root_span, c.source_file, c.source_line, c.pos_kind,
               c.source_trace_id, c.source_span_id, c.copy_no,
               n.conversation_id, n.turn_index, n.start_ns, n.end_ns,
               make_timestamp(n.start_ns // 1000)::TIMESTAMPTZ AS timestamp,
               CASE WHEN n.end_ns IS NULL THEN 0 ELSE greatest((n.end_ns - n.start_ns) // 1000000, 0) END AS latency_ms,
               n.agent, r.name AS root_name, n.user_id, n.model, n.tool_calls, n.n_spans,
               to_json(n.evaluations)::VARCHAR AS evaluations, s.scores::VARCHAR AS scores,
               r.context::VARCHAR AS context, {", ".join(f"r.meta_{k} AS {k}" for k in FROM_METADATA)},
               '{{"source_spans":' || n.n_spans || coalesce(',"source_context":' || r.context::VARCHAR, '')
               || CASE WHEN n.end_ns IS NULL THEN ',"latency_unknown":true' ELSE '' END || '}}' AS extra,
               {_io_columns()}
        FROM numbered n
        JOIN spans c ON c.source_format = n.source_format AND c.trace_id = n.trace_id AND c.span_id = n.root_span
        JOIN io r ON r.uid = n.root_uid
        LEFT JOIN io a ON a.uid = n.first_llm
        LEFT JOIN io b ON b.uid = n.last_llm
        LEFT JOIN scores_by_trace s ON s.source_format = n.source_format AND s.trace_id = n.trace_id
        ORDER BY c.source_file, c.source_line, n.trace_id
    """
