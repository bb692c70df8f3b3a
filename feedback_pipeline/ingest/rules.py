"""The precise, per-field contract rules: SQL that names every broken rule of a record.

Only records that fail the strict typed path (`typed.py`) are checked here, so the
cost of spelling out errors is paid by the bad rows alone. Not here: how records
are read (`lines.py`, `arrow_fast.py`) or filed (`quarantine.py`).
"""

from feedback_pipeline.ingest.contract import (
    ESCALATION_REASONS,
    KNOWN_TOP_LEVEL_FIELDS,
    SOURCE_FIELDS,
    THUMBS_VALUES,
    TOOL_STATUSES,
    timestamp_sql,
)

# Every field is pulled out of the JSON text in ONE parse (json_extract with a list of
# paths); the rules then look at small per-field values. Re-parsing the record per
# rule was 6x slower.
PATHS = [f"$.{name}" for name in KNOWN_TOP_LEVEL_FIELDS if name != "feedback"] + [
    "$.feedback", "$.feedback.thumbs", "$.feedback.escalated",
    "$.feedback.escalation_reason", "$.feedback.user_rewrote",
]
_STR, _INT, _BOOL, _NULL = ("VARCHAR",), ("UBIGINT", "BIGINT"), ("BOOLEAN",), ("NULL",)


def v(path: str) -> str:
    """SQL for the field's JSON value (NULL when missing), given `v` = json_extract(line, PATHS)."""
    return f"v[{PATHS.index(path) + 1}]"


def s(path: str) -> str:
    """SQL for the field's value as text, given `s` = json_extract_string(line, PATHS)."""
    return f"s[{PATHS.index(path) + 1}]"


def _type_is(path: str, allowed: tuple[str, ...]) -> str:
    return f"coalesce(json_type({v(path)}), 'NULL') IN {tuple(allowed)!r}".replace(",)", ")")


def _shown(path: str) -> str:
    """The offending value as a person would read it, truncated."""
    return f"left(coalesce({v(path)}::VARCHAR, 'missing'), 60)"


def _rules() -> list[tuple[str, str, str]]:
    """(field, SQL condition TRUE when the rule is broken, SQL message)."""
    rules: list[tuple[str, str, str]] = []
    for name in ("trace_id", "conversation_id", "agent_id"):
        rules.append((
            name,
            f"NOT {_type_is('$.' + name, _STR)} OR length({s('$.' + name)}) = 0",
            f"'{name} is ' || {_shown('$.' + name)} || ', expected a non-empty string'",
        ))
    for name in ("user_message", "agent_response"):
        rules.append((
            name,
            f"NOT {_type_is('$.' + name, _STR)}",
            f"'{name} is ' || {_shown('$.' + name)} || ', expected a string (may be empty)'",
        ))
    for name in ("turn_index", "latency_ms"):
        rules.append((
            name,
            f"NOT {_type_is('$.' + name, _INT)} OR TRY_CAST({s('$.' + name)} AS BIGINT) < 0",
            f"'{name} is ' || {_shown('$.' + name)} || ', expected an integer >= 0'",
        ))
    rules.append((
        "timestamp",
        f"NOT {_type_is('$.timestamp', _STR)} OR {timestamp_sql(s('$.timestamp'))} IS NULL",
        f"'timestamp is ' || {_shown('$.timestamp')} || ', expected ISO-8601 like 2026-11-16T09:30:00Z'",
    ))
    for name in ("vertical", "channel", "intent", "user_id", "prompt_version",
                 "retrieval_version", "model", *SOURCE_FIELDS):
        rules.append((
            name,
            f"NOT {_type_is('$.' + name, _STR + _NULL)}",
            f"'{name} is ' || {_shown('$.' + name)} || ', expected a string or null'",
        ))
    reasons = "/".join(ESCALATION_REASONS)
    rules += [
        ("feedback", f"NOT {_type_is('$.feedback', ('OBJECT', 'NULL'))}",
         f"'feedback is ' || {_shown('$.feedback')} || ', expected an object'"),
        ("feedback.thumbs",
         f"NOT {_type_is('$.feedback.thumbs', _NULL)} AND "
         f"coalesce({s('$.feedback.thumbs')} NOT IN {tuple(THUMBS_VALUES)!r}, TRUE)",
         f"'feedback.thumbs is ' || {_shown('$.feedback.thumbs')} || ', expected up/down/null'"),
        ("feedback.escalated", f"NOT {_type_is('$.feedback.escalated', _BOOL + _NULL)}",
         f"'feedback.escalated is ' || {_shown('$.feedback.escalated')} || ', expected true/false'"),
        ("feedback.user_rewrote", f"NOT {_type_is('$.feedback.user_rewrote', _BOOL + _NULL)}",
         f"'feedback.user_rewrote is ' || {_shown('$.feedback.user_rewrote')} || ', expected true/false'"),
        ("feedback.escalation_reason",
         f"NOT {_type_is('$.feedback.escalation_reason', _NULL)} AND "
         f"coalesce({s('$.feedback.escalation_reason')} NOT IN {tuple(ESCALATION_REASONS)!r}, TRUE)",
         f"'feedback.escalation_reason is ' || {_shown('$.feedback.escalation_reason')} || "
         f"', expected one of {reasons} or null'"),
        ("feedback.escalation_reason",
         f"NOT {_type_is('$.feedback.escalation_reason', _NULL)} AND "
         f"coalesce({s('$.feedback.escalated')}, 'false') <> 'true'",
         f"'feedback.escalation_reason is ' || {_shown('$.feedback.escalation_reason')} || "
         "' but feedback.escalated is not true: a reason needs an escalation'"),
        ("tool_calls",
         f"NOT {_type_is('$.tool_calls', ('ARRAY', 'NULL'))} OR "
         f"coalesce(NOT list_bool_and(list_transform(from_json({v('$.tool_calls')}, '{TOOL_CALLS_SHAPE}'), "
         f"x -> x.name IS NOT NULL AND x.status IN {tuple(TOOL_STATUSES)!r} "
         "AND coalesce(x.latency_ms, 0) >= 0)), FALSE)",
         f"'tool_calls is ' || {_shown('$.tool_calls')} || "
         "', expected a list of {name, status: ok/error, latency_ms >= 0}'"),
    ]
    return rules


TOOL_CALLS_SHAPE = '[{"name": "VARCHAR", "status": "VARCHAR", "latency_ms": "BIGINT"}]'

_NOT_A_RECORD = """[CASE
    WHEN contains(line, '\ufffd') THEN {'field': 'line', 'msg': 'contains bytes that are not valid UTF-8 (shown as \ufffd); the writer must emit UTF-8 JSON'}
    WHEN TRY_CAST(line AS JSON) IS NULL THEN {'field': 'line', 'msg': 'is not valid JSON (truncated or corrupt record)'}
    ELSE {'field': 'line', 'msg': 'is a JSON ' || lower(json_type(TRY_CAST(line AS JSON))) || ', expected one JSON object per line'}
END]"""


def problems_sql(table: str) -> str:
    """SELECT over `table` (source_file, source_line, kind, line): every row with the
    list `problems` of {field, msg} it breaks (empty list = the record is valid),
    plus `ts_text` and `trace_id_text` to file it under a week and name it."""
    broken = ", ".join(
        f"CASE WHEN {cond} THEN {{'field': '{name}', 'msg': {msg}}} END" for name, cond, msg in _rules()
    )
    return f"""
        WITH src AS (
            SELECT *, coalesce(json_type(TRY_CAST(line AS JSON)) = 'OBJECT'
                               AND NOT contains(line, '\ufffd'), FALSE) AS is_record
            FROM {table}
        ), objs AS (
            SELECT *, json_extract(line, {PATHS!r}) AS v, json_extract_string(line, {PATHS!r}) AS s
            FROM src WHERE is_record
        )
        SELECT source_file, source_line, kind, line,
               list_filter([{broken}], x -> x IS NOT NULL) AS problems,
               {s('$.timestamp')} AS ts_text,
               CASE WHEN json_type({v('$.trace_id')}) = 'VARCHAR' THEN {s('$.trace_id')} END AS trace_id_text
        FROM objs
        UNION ALL BY NAME
        SELECT source_file, source_line, kind, line, {_NOT_A_RECORD} AS problems,
               NULL AS ts_text, NULL AS trace_id_text
        FROM src WHERE NOT is_record
    """
