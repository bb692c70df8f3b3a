"""Landing files -> typed trace rows + quarantine rows, in bulk, inside one DuckDB connection.

Pure logic, no Dagster, no warehouse: the caller passes a connection (in-memory in
tests, the warehouse's in the asset, so the typed rows never leave DuckDB) and gets
temp tables back. Three tiers: a clean JSONL file is typed whole by pyarrow
(`arrow_fast.py`); otherwise every line or Parquet row is a JSON text typed by one
strict `json_transform`; only rows that path rejects go through `rules.py`, which
names every broken rule. Nothing is dropped: a row is loaded, a counted duplicate,
or quarantined.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from isal import isal_zlib

from feedback_pipeline.ingest.arrow_fast import ARROW_SCHEMA, extra_fields, read_clean_jsonl, read_file_bytes
from feedback_pipeline.ingest.contract import (
    ESCALATION_REASONS,
    KNOWN_TOP_LEVEL_FIELDS,
    RAW_TRACE_COLUMNS,
    THUMBS_VALUES,
    TOOL_STATUSES,
    timestamp_sql,
)
from feedback_pipeline.ingest.rules import TOOL_CALLS_SHAPE, problems_sql

LANDING_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
RAW_TEXT_MAX_CHARS = 2000
# \x1f never appears raw in valid JSON (control characters must be escaped), so it
# serves as "no separator" when the CSV reader is used to read whole lines.
_NO_SEPARATOR = "\x1f"

QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "week": pl.Date,
    "source_file": pl.String,
    "source_line": pl.Int64,
    "trace_id": pl.String,
    "field": pl.String,
    "reason": pl.String,
    "raw_text": pl.String,
}

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
})
_FEEDBACK_FIELDS = ("thumbs", "escalated", "escalation_reason", "user_rewrote")
# A record is any line that is not blank. Unicode trim over every line costs 20x a
# byte-length test, so only short lines are trimmed.
_NOT_BLANK = "CASE WHEN strlen(coalesce(line, '')) < 64 THEN trim(coalesce(line, '')) <> '' ELSE TRUE END"
# Strip a Windows line end without touching every line.
_NO_CR = "CASE WHEN ends_with(line, chr(13)) THEN left(line, -1) ELSE line END"

# The fast path's Arrow rows: the contract's fields plus where each came from.
FAST_SCHEMA = ARROW_SCHEMA.append(pa.field("source_line", pa.int64())).append(
    pa.field("source_file", pa.string())).append(pa.field("extra", pa.string()))


def week_of(timestamptz: str) -> str:
    """SQL: the Monday (UTC) of a TIMESTAMPTZ. date_trunc on a TIMESTAMPTZ goes through
    ICU calendars (~1.3 s per million rows, more than the rest of typing); on the UTC
    wall-clock TIMESTAMP it is plain arithmetic, and independent of the session zone."""
    return f"date_trunc('week', timezone('UTC', {timestamptz}))::DATE"


def _clean(t: str) -> str:
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


_CLEAN = f"t IS NOT NULL AND NOT contains(line, '\ufffd') AND {_clean('t.')}"


_EXTRA_FROM_KEYS = """CASE WHEN len(extra_keys) > 0 THEN to_json(map_from_entries(list_transform(
    extra_keys, k -> {'k': k, 'v': json_extract(line, CASE WHEN starts_with(k, 'feedback.')
        THEN '$.feedback."' || k[10:] || '"' ELSE '$."' || k || '"' END)})))::VARCHAR END"""


def _typed_columns(t: str, extra: str) -> str:
    """SQL select list producing RAW_TRACE_COLUMNS from a typed record under prefix `t`."""
    return f"""
        {week_of(timestamp_sql(f"{t}timestamp"))} AS week,
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
        source_file, source_line
    """


@dataclass
class LandingParse:
    """What the landing folder held, as temp tables in the connection, plus counts."""

    files: list[str]
    records_read: int = 0  # non-blank lines and Parquet rows, all weeks
    skipped_files: list[str] = field(default_factory=list)
    # temp tables/views: parsed_traces (RAW_TRACE_COLUMNS), parsed_keys (its week,
    # source_file, trace_id), typed_keys (the same for every typed record, duplicates
    # and conflicts included), parsed_quarantine
    # (QUARANTINE_COLUMNS), parsed_duplicates (week, source_file, trace_id)


def landing_files(landing_dir: Path) -> tuple[list[Path], list[str]]:
    """Contract files under `landing_dir` (any depth, sorted), and the names skipped."""
    files, skipped = [], []
    for path in sorted(p for p in landing_dir.rglob("*") if p.is_file()):
        (files if path.name.endswith(LANDING_SUFFIXES) else skipped).append(path)
    return files, [str(p.relative_to(landing_dir)) for p in skipped]


def _load_lines(con: duckdb.DuckDBPyConnection, path: Path, name: str) -> None:
    """Append one file's lines (JSONL) or rows (Parquet, as JSON) to `lines`.

    Blank JSONL lines stay as rows (they are skipped later) so line numbers are
    exact. A file with bytes that are not UTF-8 is re-read leniently so each bad line
    can be quarantined with its text instead of failing the whole file.
    """
    if name.endswith(".parquet"):
        con.execute(
            "INSERT INTO lines SELECT ?, row_number() OVER (), 'row', to_json(t)::VARCHAR "
            "FROM read_parquet(?) t",
            [name, str(path)],
        )
        return
    try:
        con.execute(
            f"INSERT INTO lines SELECT ?, row_number() OVER (), 'line', {_NO_CR} "
            f"FROM read_csv(?, columns={{'line': 'VARCHAR'}}, delim='{_NO_SEPARATOR}', quote='', "
            "escape='', header=false, auto_detect=false, compression='auto')",
            [name, str(path)],
        )
    except duckdb.Error:
        lines = _lenient_lines(path).with_columns(pl.lit(name).alias("source_file"))
        con.register("lenient_lines", lines)
        con.execute(f"INSERT INTO lines SELECT source_file, source_line, 'line', {_NO_CR} FROM lenient_lines")
        con.unregister("lenient_lines")


def _read_fast(path: Path) -> tuple[bytes | None, object]:
    """(file bytes, typed table or None) for a JSONL file; runs in a worker thread
    (pyarrow and gzip release the GIL). Errors are returned, not raised, so the
    caller quarantines the file in order."""
    if path.name.endswith(".parquet"):
        return None, None
    try:
        data = read_file_bytes(path)
        return data, read_clean_jsonl(data)
    except _UNREADABLE as exc:
        return None, exc


def _prefetched(paths: list[Path], workers: int = 2) -> Iterator[tuple[Path, bytes | None, object]]:
    """`_read_fast` of each path in order, at most `workers` files ahead (bounded memory):
    the next file decompresses and parses while DuckDB takes the current one."""
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque = deque()
        queue = iter(paths)
        for path in islice(queue, workers):
            ahead.append((path, pool.submit(_read_fast, path)))
        while ahead:
            path, future = ahead.popleft()
            following = next(queue, None)
            if following is not None:
                ahead.append((following, pool.submit(_read_fast, following)))
            yield (path, *future.result())


def _load_clean_file(con: duckdb.DuckDBPyConnection, data: bytes, table: pa.Table, name: str) -> pa.Table:
    """The file-level fast path (see `arrow_fast`): the file's rows that obey every value
    rule, as an Arrow table in the canonical shape (typed later, in one scan, by the
    `typed_fast` view); rows breaking a value rule go to `lines` with their text."""
    extras = extra_fields(table)
    # Line numbers as an Arrow column chunked like the table: exact by construction (a
    # window function over a parallel scan would not promise file order).
    ends = np.cumsum([len(c) for c in table.column(0).chunks])
    numbers = pa.chunked_array([np.arange(end - len(c) + 1, end + 1, dtype=np.int64)
                                for c, end in zip(table.column(0).chunks, ends)], type=pa.int64())
    table = table.append_column("source_line", numbers)
    con.register("_arrow_file", table)
    try:
        bad = [n for (n,) in con.execute(f"SELECT source_line FROM _arrow_file WHERE NOT {_clean('')}").fetchall()]
        extra = _extra_column(con, extras) if extras else pa.nulls(table.num_rows, pa.string())
    finally:
        con.unregister("_arrow_file")
    table = canonical_table(table, extra, name)
    if not bad:
        return table
    raw = data.split(b"\n")
    con.register("_bad_lines", pl.DataFrame({
        "source_line": bad,
        "line": [raw[n - 1].decode("utf-8", errors="replace") for n in bad],
    }, schema={"source_line": pl.Int64, "line": pl.String}))
    con.execute(f"INSERT INTO lines SELECT $1, source_line, 'line', {_NO_CR} FROM _bad_lines", [name])
    con.unregister("_bad_lines")
    return table.filter(pa.array(~np.isin(table.column("source_line").to_numpy(), bad)))


def _extra_column(con: duckdb.DuckDBPyConnection, extras: list[tuple[str, str]]) -> pa.ChunkedArray:
    """The unknown fields of each row of `_arrow_file` as one JSON text (NULL when none),
    in row order (source_line is 1..n in order, so ORDER BY is exact and cheap)."""
    expr = (f"CASE WHEN {' OR '.join(f'{col} IS NOT NULL' for _, col in extras)} THEN "
            "to_json(map_from_entries(list_filter(["
            + ", ".join(f"{{'k': '{key}', 'v': to_json({col})}}" for key, col in extras)
            + "], x -> x.v IS NOT NULL)))::VARCHAR END")
    return con.execute(f"SELECT {expr} AS extra FROM _arrow_file ORDER BY source_line").to_arrow_table().column(0)


def _canonical_struct(chunk: pa.StructArray, struct_type: pa.StructType) -> pa.StructArray:
    children = dict(zip([f.name for f in chunk.type], chunk.flatten()))
    return pa.StructArray.from_arrays([children[f.name] for f in struct_type], fields=list(struct_type),
                                      mask=chunk.is_null())


def canonical_table(table: pa.Table, extra: pa.ChunkedArray, name: str) -> pa.Table:
    """The contract's columns only (unknown fields are in `extra`), in one schema for all files."""
    feedback_type = ARROW_SCHEMA.field("feedback").type
    feedback = pa.chunked_array([
        _canonical_struct(chunk, feedback_type) for chunk in table.column("feedback").chunks], type=feedback_type)
    columns = [feedback if n == "feedback" else table.column(n) for n in ARROW_SCHEMA.names]
    return pa.Table.from_arrays(
        columns + [table.column("source_line"), pa.repeat(name, table.num_rows).cast(pa.string()), extra],
        schema=FAST_SCHEMA,
    )


def _lenient_lines(path: Path) -> pl.DataFrame:
    text = read_file_bytes(path).decode("utf-8", errors="replace").split("\n")
    if text and text[-1] == "":
        text.pop()
    return pl.DataFrame({"line": text}).with_row_index("source_line", offset=1).with_columns(
        pl.col("source_line").cast(pl.Int64)
    )


# What an unreadable (corrupt, truncated, not-really-Parquet) file raises.
_UNREADABLE = (duckdb.IOException, duckdb.InvalidInputException, OSError, EOFError, pa.ArrowException,
               isal_zlib.error)


def parse_landing(con: duckdb.DuckDBPyConnection, landing_dir: Path,
                  only: list[str] | None = None) -> LandingParse:
    """Read, validate, type and de-duplicate every landing file (or the `only` ones,
    relative names) into temp tables."""
    con.execute("SET TimeZone='UTC'")
    files, skipped = landing_files(landing_dir)
    if only is not None:
        wanted = set(only)
        files = [p for p in files if str(p.relative_to(landing_dir)) in wanted]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE lines "
        "(source_file VARCHAR, source_line BIGINT, kind VARCHAR, line VARCHAR)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE file_problems (source_file VARCHAR, reason VARCHAR, fallback_week DATE)"
    )
    names, fast_tables = [], []
    for path, data, table in _prefetched(files):
        name = str(path.relative_to(landing_dir))
        names.append(name)
        try:
            if isinstance(table, Exception):
                raise table
            if table is not None:
                fast_tables.append(_load_clean_file(con, data, table, name))
                continue
            _load_lines(con, path, name)
        except _UNREADABLE as exc:  # the file is quarantined whole; a bug still fails the run
            con.execute(
                "INSERT INTO file_problems VALUES (?, ?, ?)",
                [name, f"file could not be read ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                       "re-export it as JSON Lines (optionally gzip) or Parquet", _fallback_week(path)],
            )
    con.register("file_weeks_df", pl.DataFrame(
        {"source_file": names, "fallback_week": [_fallback_week(p) for p in files]},
        schema={"source_file": pl.String, "fallback_week": pl.Date},
    ))
    con.execute("CREATE OR REPLACE TEMP TABLE file_weeks AS SELECT * FROM file_weeks_df")
    con.unregister("file_weeks_df")

    # Clean files stay Arrow, typed by a view in the one scan that loads them: copying
    # them into a temp table first cost as much as the load itself.
    fast = pa.concat_tables(fast_tables) if fast_tables else FAST_SCHEMA.empty_table()
    con.register("fast_rows_arrow", fast)
    con.execute(f"CREATE OR REPLACE TEMP VIEW typed_fast AS SELECT {_typed_columns('', 'extra')} FROM fast_rows_arrow")
    records_read = fast.num_rows + con.execute(f"SELECT count(*) FROM lines WHERE {_NOT_BLANK}").fetchone()[0]
    _type_records(con)
    _resolve_duplicates(con)
    _collect_quarantine(con)
    con.execute("DROP TABLE lines")
    accounted = con.execute("""
        SELECT (SELECT count(*) FROM parsed_keys) + (SELECT count(*) FROM parsed_duplicates)
             + (SELECT count(*) FROM parsed_quarantine WHERE source_line IS NOT NULL)""").fetchone()[0]
    if accounted != records_read:  # a bug, never bad input: refuse to load a lossy result
        raise RuntimeError(f"ingest accounting broken: read {records_read} records, accounted {accounted}")
    return LandingParse(files=names, records_read=records_read, skipped_files=skipped)


def _type_records(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE fast AS
        SELECT source_file, source_line, kind, line, TRY(json_transform_strict(line, '{_SHAPE}')) AS t
        FROM lines WHERE {_NOT_BLANK}
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
        SELECT {_typed_columns("t.", _EXTRA_FROM_KEYS)}
        FROM keyed
    """)
    # A view, not a copy: at 1M rows every copy of the text costs ~0.4 s.
    con.execute("CREATE OR REPLACE TEMP VIEW typed AS "
                "SELECT * FROM typed_lines UNION ALL BY NAME SELECT * FROM typed_fast")
    con.execute("DROP TABLE fast")
    con.execute("DROP TABLE slow_lines")


def _resolve_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    """Identical re-sends keep their first copy (by file, line); conflicting copies are
    all quarantined, since nobody can tell which one is right. Only trace_ids that
    occur more than once are hashed and compared."""
    content = [c for c in RAW_TRACE_COLUMNS if c not in ("source_file", "source_line")]
    # The narrow columns once: counting and grouping 1M rows through the typed view
    # would re-check and re-cast every record each time.
    con.execute("CREATE OR REPLACE TEMP TABLE typed_keys AS SELECT trace_id, week, source_file FROM typed")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE repeated AS
        SELECT trace_id FROM typed_keys GROUP BY trace_id HAVING count(*) > 1
    """)
    any_repeated = con.execute("SELECT count(*) FROM repeated").fetchone()[0] > 0
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE hashed AS
        SELECT *, hash({', '.join(content)}) AS content_hash,
               row_number() OVER (PARTITION BY trace_id ORDER BY source_file, source_line) AS copy_no
        FROM typed SEMI JOIN repeated USING (trace_id) {"" if any_repeated else "LIMIT 0"}
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE trace_versions AS
        SELECT trace_id, count(DISTINCT content_hash) AS versions, count(*) AS copies,
               string_agg(DISTINCT source_file, ', ' ORDER BY source_file) AS files
        FROM hashed GROUP BY trace_id
    """)
    cols = ", ".join(RAW_TRACE_COLUMNS)
    single = "(SELECT trace_id FROM trace_versions WHERE versions = 1)"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW parsed_traces AS
        SELECT {cols} FROM typed ANTI JOIN repeated USING (trace_id)
        UNION ALL
        SELECT {cols} FROM hashed SEMI JOIN {single} USING (trace_id) WHERE copy_no = 1
    """ if any_repeated else f"CREATE OR REPLACE TEMP VIEW parsed_traces AS SELECT {cols} FROM typed")
    # week, source_file, trace_id of parsed_traces, for accounting without the wide view.
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW parsed_keys AS
        SELECT week, source_file, trace_id FROM typed_keys ANTI JOIN repeated USING (trace_id)
        UNION ALL
        SELECT week, source_file, trace_id FROM hashed SEMI JOIN {single} USING (trace_id) WHERE copy_no = 1
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE parsed_duplicates AS
        SELECT week, source_file, trace_id FROM hashed SEMI JOIN {single} USING (trace_id)
        WHERE copy_no > 1
    """)
    as_json = "to_json({" + ", ".join(f"'{c}': h.{c}" for c in content) + "})::VARCHAR"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE conflicts AS
        SELECT h.week, h.source_file, h.source_line, h.trace_id, 'trace_id' AS field,
               CASE WHEN h.source_file LIKE '%.parquet' THEN 'row ' ELSE 'line ' END || h.source_line
               || ': trace_id ''' || h.trace_id || ''' appears ' || v.copies
               || ' times with different content (in ' || v.files
               || '); fix the source and re-send one version' AS reason,
               left({as_json}, {RAW_TEXT_MAX_CHARS}) AS raw_text
        FROM hashed h JOIN trace_versions v USING (trace_id)
        WHERE v.versions > 1
    """)


def _collect_quarantine(con: duckdb.DuckDBPyConnection) -> None:
    """Every rejected record, filed under its own week or, with no usable timestamp,
    under its file's most common week (else the file's modification week)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE parsed_quarantine AS
        WITH file_mode AS (
            SELECT source_file, mode(week) AS mode_week FROM parsed_keys GROUP BY source_file
        ), rejected AS (
            SELECT {week_of(timestamp_sql("ts_text"))} AS week,
                   source_file, source_line, trace_id_text AS trace_id, problems[1].field AS field,
                   kind || ' ' || source_line || ': '
                   || array_to_string(list_transform(problems, x -> x.msg), '; ') AS reason,
                   left(line, {RAW_TEXT_MAX_CHARS}) AS raw_text
            FROM checked WHERE len(problems) > 0
            UNION ALL BY NAME SELECT * FROM conflicts
            UNION ALL BY NAME
            SELECT NULL::DATE AS week, source_file, NULL::BIGINT AS source_line, NULL AS trace_id,
                   'file' AS field, reason, NULL AS raw_text
            FROM file_problems
        )
        SELECT coalesce(r.week, m.mode_week, f.fallback_week)::DATE AS week,
               r.source_file, r.source_line::BIGINT AS source_line, r.trace_id, r.field, r.reason, r.raw_text
        FROM rejected r
        LEFT JOIN file_mode m USING (source_file)
        LEFT JOIN file_weeks f USING (source_file)
        ORDER BY r.source_file, r.source_line
    """)
    for table in ("checked", "conflicts", "file_problems", "file_weeks"):
        con.execute(f"DROP TABLE {table}")


def _week_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _fallback_week(path: Path) -> date:
    """Week for a file with no usable timestamp: its modification week, or the last
    closed week if it was modified this week (so it shows in a partition someone runs)."""
    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).date()
    this_week = _week_of(datetime.now(timezone.utc).date())
    return min(_week_of(modified), this_week - timedelta(days=7))


def parse_landing_frames(landing_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, LandingParse]:
    """The same as `parse_landing` on a private connection, returned as Polars frames
    (traces, quarantine, duplicates) — for tests and small tools."""
    with duckdb.connect() as con:
        result = parse_landing(con, landing_dir)
        traces = con.sql("SELECT * FROM parsed_traces ORDER BY source_file, source_line").pl()
        quarantine = con.sql("SELECT * FROM parsed_quarantine").pl()
        duplicates = con.sql("SELECT * FROM parsed_duplicates ORDER BY source_file").pl()
    return (
        traces.cast(RAW_TRACE_COLUMNS),
        quarantine.cast(QUARANTINE_COLUMNS),
        duplicates,
        result,
    )
