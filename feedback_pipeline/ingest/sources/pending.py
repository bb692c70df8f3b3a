"""Traces that are not (yet) turns: held while their week is open, quarantined once it has closed.

A trace whose root span has not arrived is held (its spans wait in the landing files
and are re-read with them) until its week closes; then it is an orphan, quarantined
with the parent ids it is missing. Scores whose trace is in no file read follow the
same rule. Also here: the per-file accounting of source rows and the `span_keys`
index the manifest uses to re-read every file of a trace.
"""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl

_WEEK = "date_trunc('week', make_timestamp({ns} // 1000))::DATE"


def file_pending(con: duckdb.DuckDBPyConnection, statuses: list[tuple], rejects: list[tuple], open_week: date) -> None:
    """Fill `trace_status`, `source_rejects` (turn rejects, orphans, orphan scores, bad rows)
    and `span_keys`. Weeks >= `open_week` have not closed."""
    con.register("_statuses", pl.DataFrame(statuses, orient="row", schema={
        "source_format": pl.String, "trace_id": pl.String, "status": pl.String, "ns": pl.Int64}))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE trace_status AS
        SELECT source_format, trace_id, status, {_WEEK.format(ns='ns')} AS week FROM _statuses""")
    con.unregister("_statuses")
    con.execute(f"""
        INSERT INTO trace_status
        SELECT source_format, trace_id, CASE WHEN week >= $1 THEN 'held' ELSE 'quarantined' END, week
        FROM (SELECT source_format, trace_id, {_WEEK.format(ns='first_ns')} AS week FROM traces WHERE root_uid IS NULL)
    """, [open_week])
    con.execute(f"""
        INSERT INTO trace_status
        SELECT source_format, trace_id, CASE WHEN coalesce(week, $1) >= $1 THEN 'held' ELSE 'quarantined' END, week
        FROM (SELECT source_format, trace_id, {_WEEK.format(ns='first_ns')} AS week
              FROM scores_by_trace ANTI JOIN traces USING (source_format, trace_id))
    """, [open_week])
    con.register("_turn_rejects", pl.DataFrame(rejects, orient="row", schema={
        "source_file": pl.String, "source_line": pl.Int64, "trace_id": pl.String, "field": pl.String,
        "reason": pl.String, "raw_text": pl.String}))
    con.execute("""
        INSERT INTO source_rejects
        SELECT s.week, r.source_file, r.source_line, r.trace_id, r.field, r.reason, r.raw_text
        FROM _turn_rejects r LEFT JOIN (SELECT DISTINCT trace_id, week FROM trace_status) s USING (trace_id)
    """)
    con.unregister("_turn_rejects")
    con.execute("""
        INSERT INTO source_rejects
        WITH orphan AS (
            SELECT source_format, trace_id, week FROM trace_status s
            WHERE status = 'quarantined' AND EXISTS (SELECT 1 FROM traces t WHERE t.root_uid IS NULL
                AND t.source_format = s.source_format AND t.trace_id = s.trace_id)
        ), detail AS (
            SELECT f.source_format, f.trace_id, count(*) AS n,
                   list_distinct(list(f.parent_id) FILTER (WHERE f.parent_id IS NOT NULL)) AS parents,
                   list(f.span_id) AS ids, arg_min(f.uid, (x.source_file, x.source_line)) AS first_uid
            FROM feats f JOIN spans x ON x.uid = f.uid
            WHERE (f.source_format, f.trace_id) IN (SELECT (source_format, trace_id) FROM orphan)
            GROUP BY f.source_format, f.trace_id
        )
        SELECT o.week, x.source_file, x.source_line, d.trace_id, 'trace',
               x.pos_kind || ' ' || x.source_line || ': trace ' || d.trace_id || ' has ' || d.n
               || ' span(s) but its root span never arrived (missing parent '
               || array_to_string(list_filter(d.parents, p -> NOT list_contains(d.ids, p)), ', ')
               || ') and its week has closed; export the root span too (it is written when the request '
               || 'ends) or re-send the whole trace',
               json_object('trace_id', x.source_trace_id, 'span_id', x.source_span_id, 'name', x.name)::VARCHAR
        FROM detail d JOIN orphan o USING (source_format, trace_id) JOIN spans x ON x.uid = d.first_uid
    """)
    con.execute("""
        INSERT INTO source_rejects
        SELECT t.week, s.source_file, s.source_line, s.trace_id, 'score',
               s.pos_kind || ' ' || s.source_line || ': score ''' || coalesce(s.name, '?') || ''' is for trace '
               || s.trace_id || ', which is in no landing file read and its week has closed; '
               || 'export the trace too (or drop the score from the export)',
               json_object('name', s.name, 'value', s.value, 'trace_id', s.trace_id)::VARCHAR
        FROM src_scores s JOIN trace_status t USING (source_format, trace_id)
        WHERE t.status = 'quarantined' AND s.source_file IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM traces x WHERE x.source_format = s.source_format AND x.trace_id = s.trace_id)
    """)
    con.execute("""
        INSERT INTO source_rejects
        SELECT NULL, source_file, source_line, NULL, CASE WHEN reason LIKE 'span %' THEN 'span' ELSE 'line' END,
               pos_kind || ' ' || source_line || ': ' || reason, raw_text
        FROM src_bad
    """)
    con.execute("""
        INSERT INTO span_keys
        SELECT DISTINCT source_file, trace_id, week FROM (
            SELECT source_file, source_format, trace_id FROM spans
            UNION ALL SELECT source_file, source_format, trace_id FROM src_scores WHERE source_file IS NOT NULL
        ) JOIN trace_status USING (source_format, trace_id)
    """)


def source_accounting(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per converted file: rows_read = in_turns + duplicates + held + quarantined, where a
    row is a span (observation, run), a score / feedback record, or an unreadable line.
    A span folded into its turn counts in `in_turns` (the turn itself is then loaded, a
    duplicate or quarantined like any contract record)."""
    frame = con.execute("""
        WITH roots AS (
            SELECT tr.source_format, tr.trace_id, r.span_id AS root_span
            FROM traces tr JOIN feats r ON r.uid = tr.root_uid
        ), what AS (
            SELECT x.source_file, CASE WHEN x.copy_no > 1 AND x.span_id IS DISTINCT FROM ro.root_span
                                       THEN 'duplicate' ELSE t.status END AS what
            FROM spans x JOIN trace_status t USING (source_format, trace_id)
            LEFT JOIN roots ro USING (source_format, trace_id)
            UNION ALL
            SELECT s.source_file, t.status FROM src_scores s JOIN trace_status t USING (source_format, trace_id)
            WHERE s.source_file IS NOT NULL
            UNION ALL SELECT source_file, 'quarantined' FROM src_bad
        )
        SELECT source_file, count(*) AS rows_read,
               count(*) FILTER (WHERE what = 'turn') AS in_turns,
               count(*) FILTER (WHERE what = 'duplicate') AS duplicates,
               count(*) FILTER (WHERE what = 'held') AS held,
               count(*) FILTER (WHERE what = 'quarantined') AS quarantined
        FROM what GROUP BY source_file ORDER BY source_file
    """).pl()
    return frame
