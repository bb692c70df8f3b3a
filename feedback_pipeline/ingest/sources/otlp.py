"""OTLP/JSON (the Collector's `file` exporter, or one request per file) -> rows of `src_spans`.

Unnests `resourceSpans[].scopeSpans[].spans[]` (also the older
`instrumentationLibrarySpans` and protobuf's snake_case names) in one DuckDB query,
with ids, times and attribute values normalised by `macros.py`. The attributes stay
a map: which GenAI / OpenInference keys mean what is `features.py`'s job.
"""

from __future__ import annotations

import json

import duckdb

_ATTRS = [{"key": "VARCHAR", "value": "JSON"}]
_EVENT = {"timeUnixNano": "JSON", "time_unix_nano": "JSON", "name": "VARCHAR", "attributes": _ATTRS}
_SPAN = {
    "traceId": "JSON", "trace_id": "JSON", "spanId": "JSON", "span_id": "JSON",
    "parentSpanId": "JSON", "parent_span_id": "JSON", "name": "VARCHAR",
    "startTimeUnixNano": "JSON", "start_time_unix_nano": "JSON",
    "endTimeUnixNano": "JSON", "end_time_unix_nano": "JSON",
    "attributes": _ATTRS, "events": [_EVENT], "status": {"code": "JSON", "message": "VARCHAR"},
}
_SCOPE = {"spans": [_SPAN]}
_RESOURCE = {"resource": {"attributes": _ATTRS}, "scopeSpans": [_SCOPE], "scope_spans": [_SCOPE],
             "instrumentationLibrarySpans": [_SCOPE]}
SHAPE = json.dumps({"resourceSpans": [_RESOURCE], "resource_spans": [_RESOURCE]})
# Resource attributes a turn can use (others describe the process, not the conversation).
RESOURCE_KEYS = ("service.name", "service.version", "deployment.environment", "deployment.environment.name")
ERROR_CODES = ("2", '"2"', '"STATUS_CODE_ERROR"', '"ERROR"')


def spans_sql(kind: str = "otlp") -> str:
    """INSERT INTO src_spans: every span of every OTLP request in `src_rows` of `kind`."""
    keys = "[" + ", ".join(f"'{k}'" for k in RESOURCE_KEYS) + "]"
    return f"""
        INSERT INTO src_spans BY NAME
        WITH req AS (
            SELECT source_file, source_line, pos_kind, from_json(doc, '{SHAPE}') AS r
            FROM src_rows WHERE kind = '{kind}'
        ), res AS (
            SELECT source_file, source_line, pos_kind,
                   unnest(coalesce(r.resourceSpans, r.resource_spans)) AS rs FROM req
        ), scopes AS (
            SELECT source_file, source_line, pos_kind,
                   map_from_entries(list_filter(list_transform(coalesce(rs.resource.attributes, []),
                       x -> {{'k': x.key, 'v': src_value(x.value)}}), x -> list_contains({keys}, x.k))) AS res_attrs,
                   unnest(coalesce(rs.scopeSpans, rs.scope_spans, rs.instrumentationLibrarySpans)) AS ss
            FROM res
        ), spans AS (
            SELECT source_file, source_line, pos_kind, res_attrs, unnest(ss.spans) AS sp FROM scopes
        )
        SELECT 'otlp' AS source_format, source_file, source_line, pos_kind,
               src_id(coalesce(sp.traceId, sp.trace_id)) AS trace_id,
               src_id(coalesce(sp.spanId, sp.span_id)) AS span_id,
               src_id(coalesce(sp.parentSpanId, sp.parent_span_id)) AS parent_id,
               coalesce(sp.traceId, sp.trace_id)->>'$' AS source_trace_id,
               coalesce(sp.spanId, sp.span_id)->>'$' AS source_span_id,
               sp.name AS name,
               src_ns(coalesce(sp.startTimeUnixNano, sp.start_time_unix_nano)) AS start_ns,
               src_ns(coalesce(sp.endTimeUnixNano, sp.end_time_unix_nano)) AS end_ns,
               coalesce(sp.status.code::VARCHAR IN {ERROR_CODES}, FALSE) AS is_error,
               sp.status.message AS status_message,
               map_concat(res_attrs, src_attrs(sp.attributes)) AS attrs,
               CASE WHEN len(sp.events) > 0 THEN to_json(list_transform(sp.events, e -> {{
                   'name': e.name, 'ns': src_ns(coalesce(e.timeUnixNano, e.time_unix_nano)),
                   'attrs': src_attrs(e.attributes)}})) END AS events
        FROM spans
    """


def not_requests_sql(kind: str = "otlp") -> str:
    """INSERT INTO src_bad: records of `kind` that hold no resourceSpans at all."""
    return f"""
        INSERT INTO src_bad
        SELECT source_file, source_line, pos_kind,
               'is a JSON ' || lower(json_type(doc)) || ' without resourceSpans; an OTLP/JSON file holds '
               || 'one ExportTraceServiceRequest ({{"resourceSpans": [...]}}) per line', left(doc::VARCHAR, 2000)
        FROM src_rows
        WHERE kind = '{kind}' AND json_type(coalesce(doc->'resourceSpans', doc->'resource_spans')) IS DISTINCT FROM 'ARRAY'
    """


def convert(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(not_requests_sql())
    con.execute(spans_sql())
