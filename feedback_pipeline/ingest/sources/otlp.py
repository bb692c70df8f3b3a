"""OTLP/JSON (the Collector's `file` exporter, or one request per file) -> rows of `src_spans`.

Unnests `resourceSpans[].scopeSpans[].spans[]` (also the older
`instrumentationLibrarySpans` and protobuf's snake_case names) in one DuckDB query,
with ids, times and attribute values normalised by `macros.py`. The attributes stay
a map: which GenAI / OpenInference keys mean what is `features.py`'s job.
"""

from __future__ import annotations

import json

import duckdb

_VALUE = {name: kind for field, kind in (("stringValue", "VARCHAR"), ("intValue", "VARCHAR"), ("doubleValue", "DOUBLE"),
                                          ("boolValue", "BOOLEAN"), ("arrayValue", "JSON"), ("kvlistValue", "JSON"),
                                          ("bytesValue", "VARCHAR"))
          for name in (field, {"stringValue": "string_value", "intValue": "int_value", "doubleValue": "double_value",
                               "boolValue": "bool_value", "arrayValue": "array_value", "kvlistValue": "kvlist_value",
                               "bytesValue": "bytes_value"}[field])}
_ATTRS = [{"key": "VARCHAR", "value": _VALUE}]
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
ERROR_CODES = ("2", '"2"', '"STATUS_CODE_ERROR"', '"ERROR"')


def convert(con: duckdb.DuckDBPyConnection, kind: str = "otlp") -> None:
    """INSERT INTO src_spans every span of every OTLP request in `src_rows` of `kind`, and
    INSERT INTO src_bad the records that hold no resourceSpans. One typed JSON parse per request."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _otlp AS
        SELECT source_file, source_line, pos_kind, doc, from_json(doc, '{SHAPE}') AS r
        FROM src_rows WHERE kind = '{kind}'
    """)
    con.execute("""
        INSERT INTO src_bad
        SELECT source_file, source_line, pos_kind,
               'is a JSON ' || lower(json_type(doc)) || ' without resourceSpans; an OTLP/JSON file holds '
               || 'one ExportTraceServiceRequest ({"resourceSpans": [...]}) per line', left(doc::VARCHAR, 2000)
        FROM _otlp WHERE coalesce(r.resourceSpans, r.resource_spans) IS NULL
    """)
    con.execute(f"""
        INSERT INTO src_spans BY NAME
        WITH res AS (
            SELECT source_file, source_line, pos_kind,
                   unnest(coalesce(r.resourceSpans, r.resource_spans)) AS rs FROM _otlp
        ), scopes AS (
            SELECT source_file, source_line, pos_kind,
                   list_filter(rs.resource.attributes, x -> x.key = 'service.name')[1].value AS service,
                   unnest(coalesce(rs.scopeSpans, rs.scope_spans, rs.instrumentationLibrarySpans)) AS ss
            FROM res
        ), spans AS (
            SELECT source_file, source_line, pos_kind, service, unnest(ss.spans) AS sp FROM scopes
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
               src_typed(service)->>'$' AS service, src_typed_attrs(sp.attributes) AS attrs,
               CASE WHEN len(sp.events) > 0 THEN to_json(list_transform(sp.events, e -> {{
                   'name': e.name, 'ns': src_ns(coalesce(e.timeUnixNano, e.time_unix_nano)),
                   'attrs': src_typed_attrs(e.attributes)}})) END AS events
        FROM spans
    """)
    con.execute("DROP TABLE _otlp")
