"""SQL macros for the quirks of tracing exports: ids, timestamps and typed attribute values.

One place that knows every shape a source writes an id, a time or an attribute in
(hex, base64, byte arrays; nanosecond strings, integers, `{low, high}` longs,
`[sec, nanos]` arrays, ISO strings with or without `T`/zone; OTLP `{"stringValue": ...}`
wrappers). The format modules call these macros; mapping to turns is `assemble.py`'s.
"""

from __future__ import annotations

import duckdb

from feedback_pipeline.ingest.contract import timestamp_sql

_B64_ID = r"[A-Za-z0-9+/]{22}==|[A-Za-z0-9+/]{11}=|[A-Za-z0-9_-]{22}|[A-Za-z0-9+/]{43}="
_HEX_ID = r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}"

MACROS = [
    # Attribute maps hold text: a JSON string unquoted, any other JSON value as its JSON text
    # (so long message strings are never escaped and unescaped again).
    """src_text(j) AS CASE WHEN json_type(j) = 'VARCHAR' THEN j->>'$' ELSE j::VARCHAR END""",
    # Text that holds JSON (metadata, tags) as JSON; other text as a JSON string.
    """src_json_text(t) AS CASE WHEN t IS NULL THEN NULL WHEN json_valid(t) AND regexp_matches(t, '^\s*[\[{]')
        THEN t::JSON ELSE to_json(t) END""",
    # An id written as text: hex (OTLP/JSON), base64 (protobuf's JSON mapping) -> lower hex;
    # anything else (UUIDs, Langfuse ids) as written. All-zero and empty ids are no id.
    f"""src_id_text(s) AS CASE
        WHEN s IS NULL OR s = '' OR regexp_full_match(s, '0+|A+=*') THEN NULL
        WHEN regexp_full_match(s, '{_HEX_ID}') THEN lower(s)
        WHEN regexp_full_match(s, '{_B64_ID}') AND TRY(from_base64(replace(replace(s, '-', '+'), '_', '/'))) IS NOT NULL
            THEN lower(hex(from_base64(replace(replace(s, '-', '+'), '_', '/'))))
        ELSE s END""",
    # An id as any JSON value: text, a byte array ([75, 249, ...]) or a number.
    """src_id(j) AS CASE
        WHEN j IS NULL OR json_type(j) = 'NULL' THEN NULL
        WHEN json_type(j) = 'ARRAY' THEN nullif(lower(array_to_string(list_transform(
            TRY(from_json(j, '["UBIGINT"]')), x -> printf('%02x', x)), '')), '')
        WHEN json_type(j) = 'VARCHAR' THEN src_id_text(j->>'$')
        ELSE j::VARCHAR END""",
    # An integer count of seconds, ms, us or ns since the epoch, as nanoseconds (by size).
    """src_scale(n) AS CASE WHEN n IS NULL THEN NULL
        WHEN abs(n) >= 100000000000000000 THEN n
        WHEN abs(n) >= 100000000000000 THEN n * 1000
        WHEN abs(n) >= 100000000000 THEN n * 1000000
        ELSE n * 1000000000 END""",
    # A time as any JSON value -> nanoseconds since the epoch (NULL when unreadable).
    f"""src_ns(j) AS CASE json_type(j)
        WHEN 'UBIGINT' THEN src_scale(TRY_CAST(j::VARCHAR AS BIGINT))
        WHEN 'BIGINT' THEN src_scale(TRY_CAST(j::VARCHAR AS BIGINT))
        WHEN 'DOUBLE' THEN CASE WHEN abs(j::DOUBLE) < 100000000000
            THEN CAST(round(j::DOUBLE * 1e9) AS BIGINT) ELSE src_scale(CAST(j::DOUBLE AS BIGINT)) END
        WHEN 'OBJECT' THEN src_scale((TRY_CAST(j->>'high' AS BIGINT) << 32)
                                     + (TRY_CAST(j->>'low' AS BIGINT) & 4294967295))
        WHEN 'ARRAY' THEN TRY_CAST(j->>'$[0]' AS BIGINT) * 1000000000 + coalesce(TRY_CAST(j->>'$[1]' AS BIGINT), 0)
        WHEN 'VARCHAR' THEN CASE WHEN regexp_full_match(j->>'$', '-?[0-9]+')
            THEN src_scale(TRY_CAST(j->>'$' AS BIGINT))
            ELSE epoch_ns({timestamp_sql("(j->>'$')")}) END
        END""",
    # One OTLP AnyValue without nested containers -> plain JSON.
    """src_scalar(v) AS CASE
        WHEN v IS NULL OR json_type(v) <> 'OBJECT' THEN v
        WHEN json_exists(v, '$.stringValue') THEN v->'stringValue'
        WHEN json_exists(v, '$.string_value') THEN v->'string_value'
        WHEN json_exists(v, '$.intValue') THEN coalesce(TRY_CAST(v->>'intValue' AS BIGINT)::JSON, v->'intValue')
        WHEN json_exists(v, '$.int_value') THEN coalesce(TRY_CAST(v->>'int_value' AS BIGINT)::JSON, v->'int_value')
        WHEN json_exists(v, '$.doubleValue') THEN v->'doubleValue'
        WHEN json_exists(v, '$.double_value') THEN v->'double_value'
        WHEN json_exists(v, '$.boolValue') THEN v->'boolValue'
        WHEN json_exists(v, '$.bool_value') THEN v->'bool_value'
        WHEN json_exists(v, '$.bytesValue') THEN v->'bytesValue'
        ELSE v END""",
    # One OTLP AnyValue -> plain JSON (arrays and key-value lists one level deep).
    """src_value(v) AS CASE
        WHEN v IS NULL OR json_type(v) <> 'OBJECT' THEN v
        WHEN json_exists(v, '$.arrayValue') OR json_exists(v, '$.array_value') THEN to_json(list_transform(
            from_json(coalesce(v->'arrayValue'->'values', v->'array_value'->'values', '[]'), '["JSON"]'),
            x -> src_scalar(x)))
        WHEN json_exists(v, '$.kvlistValue') OR json_exists(v, '$.kvlist_value') THEN to_json(map_from_entries(
            list_transform(from_json(coalesce(v->'kvlistValue'->'values', v->'kvlist_value'->'values', '[]'),
                                     '[{"key": "VARCHAR", "value": "JSON"}]'), x -> {'k': x.key, 'v': src_scalar(x.value)})))
        ELSE src_scalar(v) END""",
    # One OTLP AnyValue typed by `from_json` (struct of the wrapper fields) -> plain JSON; the
    # typed struct costs one JSON parse per request instead of one per attribute and test.
    """src_typed(v) AS CASE
        WHEN v.stringValue IS NOT NULL THEN to_json(v.stringValue)
        WHEN v.string_value IS NOT NULL THEN to_json(v.string_value)
        WHEN coalesce(v.intValue, v.int_value) IS NOT NULL
            THEN coalesce(TRY_CAST(coalesce(v.intValue, v.int_value) AS BIGINT)::VARCHAR::JSON,
                          to_json(coalesce(v.intValue, v.int_value)))
        WHEN coalesce(v.doubleValue, v.double_value) IS NOT NULL THEN to_json(coalesce(v.doubleValue, v.double_value))
        WHEN coalesce(v.boolValue, v.bool_value) IS NOT NULL THEN to_json(coalesce(v.boolValue, v.bool_value))
        WHEN coalesce(v.arrayValue, v.array_value) IS NOT NULL
            THEN src_value(json_object('arrayValue', coalesce(v.arrayValue, v.array_value)))
        WHEN coalesce(v.kvlistValue, v.kvlist_value) IS NOT NULL
            THEN src_value(json_object('kvlistValue', coalesce(v.kvlistValue, v.kvlist_value)))
        WHEN coalesce(v.bytesValue, v.bytes_value) IS NOT NULL THEN to_json(coalesce(v.bytesValue, v.bytes_value))
        END""",
    """src_typed_attrs(a) AS map_from_entries(list_filter(list_transform(coalesce(a, []),
        x -> {'k': x.key, 'v': src_text(src_typed(x.value))}),
        (x, i) -> list_position(list_transform(coalesce(a, []), y -> y.key), x.k) = i))""",
    # OTLP attributes [{key, value: AnyValue}] -> MAP(key -> plain JSON).
    # (the first of repeated keys is kept: a MAP refuses duplicates)
    """src_attrs(a) AS map_from_entries(list_filter(list_transform(coalesce(a, []),
        x -> {'k': x.key, 'v': src_text(src_value(x.value))}),
        (x, i) -> list_position(list_transform(coalesce(a, []), y -> y.key), x.k) = i))""",
    # A flat JSON object {"llm.model_name": ...} -> MAP(key -> JSON).
    """src_object_attrs(o) AS CASE WHEN json_type(o) = 'OBJECT' THEN map_from_entries(list_transform(
        json_keys(o), k -> {'k': k, 'v': src_text(json_extract(o, '$."' || replace(k, '"', '\\"') || '"'))}))
        ELSE MAP {}::MAP(VARCHAR, VARCHAR) END""",
    # A JSON text held in a string ("{...}" / "[...]") as JSON; anything else unchanged.
    """src_unquote(j) AS CASE WHEN json_type(j) = 'VARCHAR' AND regexp_matches(j->>'$', '^\\s*[\\[{]')
        AND json_valid(j->>'$') THEN (j->>'$')::JSON ELSE j END""",
]


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    for macro in MACROS:
        con.execute(f"CREATE OR REPLACE TEMP MACRO {macro}")
