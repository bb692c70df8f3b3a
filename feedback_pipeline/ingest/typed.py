"""Typing records: the strict JSON shape of a contract record and the SQL that types it.

Every non-blank text in `lines` is typed by one strict `json_transform`; a record that
is typed and obeys every value rule is clean. Records that are not go to `rules.py`,
which names each broken rule. The output is the `typed` view, in the columns of
`RawTraces`. De-duplication (`duplicates.py`) and quarantine (`quarantine.py`) follow.
"""

from __future__ import annotations

import json

import duckdb

from feedback_pipeline.ingest.contract import (
    CONTRACT_FORMAT,
    ESCALATION_REASONS,
    KNOWN_TOP_LEVEL_FIELDS,
    SOURCE_FIELDS,
    THUMBS_VALUES,
    TOOL_STATUSES,
    timestamp_sql,
)
from feedback_pipeline.ingest.lines import NOT_BLANK
from feedback_pipeline.ingest.rules import TOOL_CALLS_SHAPE, problems_sql
from feedback_pipeline.weeks import week_sql

_SHAPE = json.dumps({
    "trace_id": "VARCHAR", "conversation_id": "VARCHAR", "turn_index": "BIGINT",
    "timestamp": "VARCHAR", "agent_id": "VARCHAR", "vertical": "VARCHAR",
    "channel": "VARCHAR", "intent": "VARCHAR", "user_id": "VARCHAR",
    "user_message": "VARCHAR", "agent_response": "VARCHAR",
    "tool_calls": json.loads(TOOL_CALLS_SHAPE), "latency_ms": "BIGINT",
    "prompt_version": "VARCHAR", "retrieval_version": "VARCHAR", "model": "VARCHAR",
    # Booleans as JSON: a strict BOOLEAN transform would accept the string "yes".
    "feedback": {"thumbs": "VARCHAR", "escalated": "JSON",
                 "escalation_reason": "VARCHAR", "user_rewrote": "JSON"},
    **{name: "VARCHAR" for name in SOURCE_FIELDS},
})
_FEEDBACK_FIELDS = ("thumbs", "escalated", "escalation_reason", "user_rewrote")


def clean_sql(t: str) -> str:
    """SQL: the strictly-typed record (fields under prefix `t`) also obeys every value rule
    (never NULL: a missing value makes it FALSE, so the row takes the precise path)."""
    return f"""coalesce((
    length({t}trace_id) > 0 AND length({t}conversation_id) > 0 AND length({t}agent_id) > 0
    AND {t}user_message IS NOT NULL AND {t}agent_response IS NOT NULL
    AND {t}turn_index >= 0 AND {t}latency_ms >= 0
    AND {timestamp_sql(f"{t}timestamp")} IS NOT NULL
    AND ({t}feedback.thumbs IS NULL OR {t}feedback.thumbs IN {tuple(THUMBS_VALUES)!r})
    AND coalesce({t}feedback.escalated::VARCHAR IN ('true', 'false', 'null'), TRUE)
    AND coalesce({t}feedback.user_rewrote::VARCHAR IN ('true', 'false', 'null'), TRUE)
    AND ({t}feedback.escalation_reason IS NULL OR
         ({t}feedback.escalation_reason IN {tuple(ESCALATION_REASONS)!r}
          AND {t}feedback.escalated::VARCHAR = 'true'))
    AND coalesce(list_bool_and(list_transform({t}tool_calls,
        x -> x.name IS NOT NULL AND x.status IN {tuple(TOOL_STATUSES)!r}
             AND coalesce(x.latency_ms, 0) >= 0)), TRUE)
    ), FALSE)"""


_CLEAN = f"t IS NOT NULL AND NOT contains(line, '\ufffd') AND {clean_sql('t.')}"

_EXTRA_FROM_KEYS = """CASE WHEN len(extra_keys) > 0 THEN to_json(map_from_entries(list_transform(
    extra_keys, k -> {'k': k, 'v': json_extract(line, CASE WHEN starts_with(k, 'feedback.')
        THEN '$.feedback."' || k[10:] || '"' ELSE '$."' || k || '"' END)})))::VARCHAR END"""


def typed_columns(t: str, extra: str) -> str:
    """SQL select list producing the RawTraces columns from a typed record under prefix `t`."""
    return f"""
        {week_sql(timestamp_sql(f"{t}timestamp"))} AS week,
        {t}trace_id AS trace_id, {t}conversation_id AS conversation_id, {t}turn_index AS turn_index,
        {timestamp_sql(f"{t}timestamp")} AS timestamp,
        {t}agent_id AS agent_id, {t}vertical AS vertical, {t}channel AS channel, {t}intent AS intent,
        {t}user_id AS user_id, {t}user_message AS user_message, {t}agent_response AS agent_response,
        {t}tool_calls AS tool_calls, {t}latency_ms AS latency_ms,
        {t}prompt_version AS prompt_version, {t}retrieval_version AS retrieval_version, {t}model AS model,
        {t}feedback.thumbs AS thumbs,
        coalesce({t}feedback.escalated::VARCHAR = 'true', FALSE) AS escalated,
        {t}feedback.escalation_reason AS escalation_reason,
        coalesce({t}feedback.user_rewrote::VARCHAR = 'true', FALSE) AS user_rewrote,
        {extra} AS extra,
        coalesce({t}source_format, '{CONTRACT_FORMAT}') AS source_format,
        {t}source_trace_id AS source_trace_id, {t}source_span_id AS source_span_id,
        source_file, source_line
    """


def type_records(con: duckdb.DuckDBPyConnection) -> None:
    """`lines` -> the view `typed` (clean records, every path) and the table `checked`
    (the records the strict path rejected, with the list of rules each breaks)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE fast AS
        SELECT source_file, source_line, kind, line, TRY(json_transform_strict(line, '{_SHAPE}')) AS t
        FROM lines WHERE {NOT_BLANK}
    """)
    con.execute(f"CREATE OR REPLACE TEMP TABLE slow_lines AS SELECT source_file, source_line, kind, line FROM fast WHERE NOT ({_CLEAN})")
    con.execute(f"CREATE OR REPLACE TEMP TABLE checked AS {problems_sql('slow_lines')}")
    known = "[" + ", ".join(f"'{k}'" for k in KNOWN_TOP_LEVEL_FIELDS) + "]"
    feedback_known = "[" + ", ".join(f"'{k}'" for k in _FEEDBACK_FIELDS) + "]"
    # Typed rows: the clean fast-path rows, plus slow-path rows with no problem (rules
    # proved their types, so the lenient transform is exact for them).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE typed_lines AS
        WITH ok AS (
            SELECT source_file, source_line, line, t FROM fast WHERE {_CLEAN}
            UNION ALL
            SELECT source_file, source_line, line, json_transform(line, '{_SHAPE}') AS t
            FROM checked WHERE len(problems) = 0
        ), keyed AS (
            SELECT *, list_filter(keys[1], k -> NOT list_contains({known}, k))
                      || list_transform(list_filter(coalesce(keys[2], []),
                                                    k -> NOT list_contains({feedback_known}, k)),
                                        k -> 'feedback.' || k) AS extra_keys
            FROM (SELECT *, json_keys(line, ['$', '$.feedback']) AS keys FROM ok)
        )
        SELECT {typed_columns("t.", _EXTRA_FROM_KEYS)}
        FROM keyed
    """)
    # A view, not a copy: at 1M rows every copy of the text costs ~0.4 s.
    con.execute("CREATE OR REPLACE TEMP VIEW typed AS "
                "SELECT * FROM typed_lines UNION ALL BY NAME SELECT * FROM typed_fast")
    con.execute("DROP TABLE fast")
    con.execute("DROP TABLE slow_lines")
