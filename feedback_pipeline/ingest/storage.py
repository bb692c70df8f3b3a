"""Writing a week of raw_traces and ingest_quarantine, and how raw_traces is laid out on disk.

By default DuckDB tries every string compression on every column segment it writes.
For the free-text and id columns (every value distinct) the dictionary attempt hashes
every string only to be rejected, and for the few-valued columns the FSST attempt is
wasted. Naming the method per column (`USING COMPRESSION`, a DuckDB column option)
made the 1M-trace insert ~25 % cheaper in CPU with the same file size (139-142 MiB
either way; benchmarks/ingest.py). A DuckDB that rejects the option gets the plain
table: same data, default compression. A warehouse made before a column was added
to `RawTraces` gets it added (older rows take the column's default).
"""

import duckdb

from feedback_pipeline.ingest.contract import CONTRACT_FORMAT
from feedback_pipeline.ingest.manifest import WeekRead, record_files
from feedback_pipeline.warehouse import is_lake, replace_week, table_columns, table_exists

# Every value distinct (or nearly): FSST.
FSST_COLUMNS = ("trace_id", "conversation_id", "user_id", "user_message", "agent_response",
                "source_trace_id", "source_span_id")
# A handful of values per week: dictionary.
DICTIONARY_COLUMNS = ("agent_id", "vertical", "channel", "intent", "prompt_version",
                      "retrieval_version", "model", "thumbs", "escalation_reason", "source_format",
                      "source_file")
# What rows written before a column existed hold in it.
DEFAULTS = {"source_format": f"'{CONTRACT_FORMAT}'"}


def create_raw_traces(con: duckdb.DuckDBPyConnection, shape_sql: str) -> None:
    """Create raw_traces (if missing) with the columns of `shape_sql` and the compression
    above; add the columns an older raw_traces lacks."""
    columns = con.execute(f"DESCRIBE {shape_sql}").fetchall()
    if table_exists(con, "raw_traces"):
        migrate_raw_traces(con, columns)
        return
    method = {**{c: "fsst" for c in FSST_COLUMNS}, **{c: "dictionary" for c in DICTIONARY_COLUMNS}}
    plain = ", ".join(f'"{name}" {kind}' for name, kind, *_ in columns)
    hinted = ", ".join(f'"{name}" {kind}' + (f" USING COMPRESSION {method[name]}" if name in method else "")
                       for name, kind, *_ in columns)
    if is_lake(con):  # a DuckLake writes Parquet: no per-column compression option
        con.execute(f"CREATE TABLE raw_traces ({plain})")
        return
    try:
        con.execute(f"CREATE TABLE raw_traces ({hinted})")
    except duckdb.ParserException:
        con.execute(f"CREATE TABLE raw_traces ({plain})")


def migrate_raw_traces(con: duckdb.DuckDBPyConnection, columns: list[tuple]) -> None:
    """ALTER TABLE ... ADD COLUMN IF NOT EXISTS for every column of the shape the table lacks."""
    have = table_columns(con, "raw_traces")
    for name, kind, *_ in columns:
        if name not in have:
            default = f" DEFAULT {DEFAULTS[name]}" if name in DEFAULTS else ""
            con.execute(f'ALTER TABLE raw_traces ADD COLUMN IF NOT EXISTS "{name}" {kind}{default}')


def write_week(con: duckdb.DuckDBPyConnection, read: WeekRead, week, replace=replace_week) -> tuple[int, int]:
    """Replace `week` of raw_traces and ingest_quarantine from the parse and update the
    manifest; the caller holds the transaction. Returns (loaded, quarantined)."""
    record_files(con, read.current, read.plan.changed)
    create_raw_traces(con, "SELECT * FROM parsed_traces")
    # Row order in raw_traces carries no meaning (every reader orders or keys by
    # trace_id), and an order-free insert runs on all cores and writes its row
    # groups as it goes: about 2x faster, and no second write at COMMIT.
    con.execute("SET preserve_insertion_order = false")
    loaded = replace(con, "raw_traces", week, "SELECT * FROM parsed_traces WHERE week = ?", [week],
                          atomic=False)
    con.execute("RESET preserve_insertion_order")  # the quarantine keeps file order
    quarantined = replace(
        con, "ingest_quarantine", week,
        "SELECT *, now()::TIMESTAMPTZ AS quarantined_at FROM parsed_quarantine WHERE week = ? "
        "ORDER BY source_file, source_line", [week], atomic=False)
    return loaded, quarantined
