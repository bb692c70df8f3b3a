"""Phoenix span exports (OpenInference spans as JSON / JSONL / Parquet rows) -> rows of `src_spans`.

A row carries `context.trace_id` / `context.span_id` (nested or as flat columns),
`parent_id`, `span_kind`, `start_time` / `end_time`, `status_code` and the flat
OpenInference `attributes` (an object, or `attributes.*` columns in a dataframe
export). The attribute meanings are `features.py`'s.
"""

from __future__ import annotations

import duckdb


def _field(doc: str, *names: str) -> str:
    return "coalesce(" + ", ".join(f"json_extract({doc}, '$.\"{n}\"')" for n in names) + ")"


_ATTRS = """map_concat(
    CASE WHEN doc->>'span_kind' IS NOT NULL THEN MAP {'openinference.span.kind': doc->>'span_kind'}
         ELSE MAP {}::MAP(VARCHAR, VARCHAR) END,
    map_from_entries(list_transform(list_filter(json_keys(doc), k -> starts_with(k, 'attributes.')),
        k -> {'k': k[12:], 'v': src_text(json_extract(doc, '$."' || k || '"'))})),
    src_object_attrs(src_unquote(doc->'attributes')))"""
_EVENTS = """CASE WHEN json_type(src_unquote(doc->'events')) = 'ARRAY' THEN to_json(list_transform(
    from_json(src_unquote(doc->'events'), '["JSON"]'),
    e -> {'name': json_extract_string(e, '$.name'), 'ns': src_ns(json_extract(e, '$.timestamp')),
          'attrs': src_object_attrs(json_extract(e, '$.attributes'))})) END"""


def convert(con: duckdb.DuckDBPyConnection) -> None:
    trace = _field("doc", "context.trace_id") + ", doc->'context'->'trace_id'"
    span = _field("doc", "context.span_id") + ", doc->'context'->'span_id'"
    con.execute(f"""
        INSERT INTO src_spans BY NAME
        SELECT 'phoenix' AS source_format, source_file, source_line, pos_kind,
               src_id(coalesce({trace})) AS trace_id, src_id(coalesce({span})) AS span_id,
               src_id(coalesce(doc->'parent_id', doc->'parent_span_id')) AS parent_id,
               coalesce({trace})->>'$' AS source_trace_id, coalesce({span})->>'$' AS source_span_id,
               doc->>'name' AS name, src_ns(doc->'start_time') AS start_ns, src_ns(doc->'end_time') AS end_ns,
               coalesce(upper(doc->>'status_code') IN ('ERROR', 'STATUS_CODE_ERROR', '2'), FALSE) AS is_error,
               doc->>'status_message' AS status_message, {_ATTRS} AS attrs, {_EVENTS} AS events
        FROM src_rows WHERE kind = 'phoenix'
    """)
