"""De-duplication of typed records by trace_id: identical re-sends dropped, conflicts quarantined.

Reads the `typed` view (`typed.py`); leaves `typed_keys`, `parsed_traces`,
`parsed_keys`, `parsed_duplicates` and `conflicts`. Filing conflicts under a week
with the other rejects is `quarantine.py`'s job.
"""

from __future__ import annotations

import duckdb

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.ingest.schemas import RawTraces

RAW_TEXT_MAX_CHARS = 2000


def resolve_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    """Identical re-sends keep their first copy (by file, line); conflicting copies are
    all quarantined, since nobody can tell which one is right. Only trace_ids that
    occur more than once are hashed and compared."""
    columns = list(polars_schema(RawTraces))
    content = [c for c in columns if c not in ("source_file", "source_line")]
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
    cols = ", ".join(columns)
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
