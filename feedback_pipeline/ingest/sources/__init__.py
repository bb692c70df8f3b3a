"""Tracing tools' exports read as they are: detect each file's format, convert its spans to contract records.

Files under `landing/` that are not the contract (OTLP/JSON, Phoenix spans, Langfuse,
LangSmith) are read in bulk into one span table (`rows.py` + a module per format),
assembled into one turn per trace (`assemble.py`, `turns.py`), and handed to the
contract's typed path as rows (`arrow_fast.load_typed_rows`), so validation,
de-duplication and quarantine are the contract's own. Held and orphan traces:
`pending.py`. Not here: the contract path itself (`ingest/parse.py` and below).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from feedback_pipeline.ingest.landing import UNREADABLE
from feedback_pipeline.ingest.arrow_fast import load_typed_rows
from feedback_pipeline.ingest.quarantine import file_problem
from feedback_pipeline.ingest.sources import langfuse, langsmith, otlp, phoenix
from feedback_pipeline.ingest.sources.assemble import assemble, create_span_tables
from feedback_pipeline.ingest.sources.config import SourcesConfig, load_config
from feedback_pipeline.ingest.sources.detect import FAMILY, container, detect
from feedback_pipeline.ingest.sources.macros import install_macros
from feedback_pipeline.ingest.sources.otlp_arrow import insert_arrow_spans, read_otlp_arrow
from feedback_pipeline.ingest.sources.pending import file_pending, source_accounting
from feedback_pipeline.ingest.sources.rows import create_row_tables, load_rows
from feedback_pipeline.ingest.sources.turns import build_turns
from feedback_pipeline.weeks import current_week

# family -> its converter (run only when a file of the family went the JSON-row way)
_CONVERTERS = {"otlp": otlp.convert, "phoenix": phoenix.convert, "langfuse": langfuse.convert,
               "langsmith": langsmith.convert}


UNKNOWN = "unknown"


def split_by_format(landing_dir: Path, files: list[Path],
                    config: SourcesConfig | None = None) -> tuple[list[Path], list[Path], dict[str, str]]:
    """(contract files, export files, file -> detected kind). A JSON or CSV file that is no
    export is of kind `unknown` (the contract is JSON Lines or Parquet) and in neither list."""
    config = config or load_config(landing_dir)
    contract, foreign, kinds = [], [], {}
    for path in files:
        name = str(path.relative_to(landing_dir))
        kinds[name] = detect(path, name, config)
        if kinds[name] == "contract" and container(name) in ("json", "csv") \
                and config.for_file(name).format != "contract":
            kinds[name] = UNKNOWN
            continue
        (contract if kinds[name] == "contract" else foreign).append(path)
    return contract, foreign, kinds


def convert_sources(con: duckdb.DuckDBPyConnection, landing_dir: Path, foreign: list[Path],
                    kinds: dict[str, str]) -> tuple[pl.DataFrame | None, pa.Table | None]:
    """Convert the export files into typed contract rows (returned; rows breaking a rule are
    already in `lines`) and rejects in `source_rejects`; leaves `span_keys`. Also returns the
    per-file accounting of source rows (None: no exports)."""
    con.execute("CREATE OR REPLACE TEMP TABLE span_keys (source_file VARCHAR, trace_id VARCHAR, week DATE)")
    if not foreign:
        return None, None
    config = load_config(landing_dir)
    install_macros(con)
    create_row_tables(con)
    create_span_tables(con)
    typed = []  # Collector files typed by pyarrow: unnested together, in one statement
    for path in foreign:
        name = str(path.relative_to(landing_dir))
        try:
            table = read_otlp_arrow(path) if kinds[name] == "otlp" and container(name) == "jsonl" else None
            if table is not None:
                typed.append(table.append_column("source_file", pa.repeat(name, table.num_rows).cast(pa.string())))
                continue
            load_rows(con, path, name, kinds[name])
        except (*UNREADABLE, duckdb.Error) as exc:
            file_problem(con, name, path, exc, f"detected as {kinds[name]}; re-export it (JSON Lines, JSON, "
                                               "CSV or Parquet, optionally gzip) or pin its folder's format "
                                               "in landing/sources.yaml")
    if typed:
        insert_arrow_spans(con, pa.concat_tables(typed))
    loaded = {kind for (kind,) in con.execute("SELECT DISTINCT kind FROM src_rows").fetchall()}
    for family, convert in _CONVERTERS.items():
        if any(FAMILY.get(kind) == family for kind in loaded):
            convert(con)
    assemble(con)
    records, positions, rejects, statuses = build_turns(con, config)
    records = load_typed_rows(con, records, positions)
    file_pending(con, statuses, rejects, current_week())
    accounting = source_accounting(con)
    for table in ("src_rows", "src_bad", "src_spans", "src_scores", "spans", "feats", "traces",
                  "scores_by_trace", "trace_status", "span_copies"):
        con.execute(f"DROP VIEW IF EXISTS {table}" if table == "spans" else f"DROP TABLE IF EXISTS {table}")
    return accounting, records
