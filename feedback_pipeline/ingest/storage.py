"""How raw_traces is laid out on disk: per-column compression chosen up front.

By default DuckDB tries every string compression on every column segment it writes.
For the free-text and id columns (every value distinct) the dictionary attempt hashes
every string only to be rejected, and for the few-valued columns the FSST attempt is
wasted. Naming the method per column (`USING COMPRESSION`, a DuckDB column option)
made the 1M-trace insert ~25 % cheaper in CPU with the same file size (139-142 MiB
either way; benchmarks/ingest.py). A DuckDB that rejects the option gets the plain
table: same data, default compression.
"""

import duckdb

from feedback_pipeline.warehouse import table_exists

# Every value distinct (or nearly): FSST.
FSST_COLUMNS = ("trace_id", "conversation_id", "user_id", "user_message", "agent_response")
# A handful of values per week: dictionary.
DICTIONARY_COLUMNS = ("agent_id", "vertical", "channel", "intent", "prompt_version",
                      "retrieval_version", "model", "thumbs", "escalation_reason", "source_file")


def create_raw_traces(con: duckdb.DuckDBPyConnection, shape_sql: str) -> None:
    """Create raw_traces (if missing) with the columns of `shape_sql` and the compression above."""
    if table_exists(con, "raw_traces"):
        return
    columns = con.execute(f"DESCRIBE {shape_sql}").fetchall()
    method = {**{c: "fsst" for c in FSST_COLUMNS}, **{c: "dictionary" for c in DICTIONARY_COLUMNS}}
    plain = ", ".join(f'"{name}" {kind}' for name, kind, *_ in columns)
    hinted = ", ".join(f'"{name}" {kind}' + (f" USING COMPRESSION {method[name]}" if name in method else "")
                       for name, kind, *_ in columns)
    try:
        con.execute(f"CREATE TABLE raw_traces ({hinted})")
    except duckdb.ParserException:
        con.execute(f"CREATE TABLE raw_traces ({plain})")
