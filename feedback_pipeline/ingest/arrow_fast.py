"""File-level fast path: a clean JSONL file typed in one multi-threaded pyarrow pass.

pyarrow's JSON reader is strict about types (a string where a number belongs fails
the file) and, told to infer unexpected fields, returns unknown keys (top level and
inside `feedback`) as extra columns, so nothing is lost. Any file it rejects, or
with blank lines (its row numbers would no longer be line numbers), goes to the
line-level path in `parse.py`. About 3x less CPU than typing line by line in DuckDB.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
from isal import igzip

_TOOL_CALL = pa.struct([("name", pa.string()), ("status", pa.string()), ("latency_ms", pa.int64())])
ARROW_SCHEMA = pa.schema([
    ("trace_id", pa.string()), ("conversation_id", pa.string()), ("turn_index", pa.int64()),
    ("timestamp", pa.timestamp("us", tz="UTC")), ("agent_id", pa.string()), ("vertical", pa.string()),
    ("channel", pa.string()), ("intent", pa.string()), ("user_id", pa.string()),
    ("user_message", pa.string()), ("agent_response", pa.string()),
    ("tool_calls", pa.list_(_TOOL_CALL)), ("latency_ms", pa.int64()),
    ("prompt_version", pa.string()), ("retrieval_version", pa.string()), ("model", pa.string()),
    ("feedback", pa.struct([("thumbs", pa.string()), ("escalated", pa.bool_()),
                            ("escalation_reason", pa.string()), ("user_rewrote", pa.bool_())])),
])
_PARSE = pj.ParseOptions(explicit_schema=ARROW_SCHEMA, unexpected_field_behavior="infer")
# Each line must fit in a block; bigger blocks, fewer tasks. Larger lines fall back.
_READ = pj.ReadOptions(block_size=8 << 20, use_threads=True)


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped by ISA-L (isal): 4-5x faster than zlib, which was a
    quarter of the ingest time for gzip landing files."""
    data = path.read_bytes()
    return igzip.decompress(data) if path.name.endswith(".gz") else data


def read_clean_jsonl(data: bytes) -> pa.Table | None:
    """The file as a typed table whose row i is line i+1, or None (use the line path)."""
    if not data:
        return None
    try:
        table = pj.read_json(pa.BufferReader(data), read_options=_READ, parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    physical_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return table if table.num_rows == physical_lines else None


def extra_fields(table: pa.Table) -> list[tuple[str, str]]:
    """(name in `extra`, SQL column expression) of every field the contract does not know."""
    known = set(ARROW_SCHEMA.names)
    extra = [(name, f'"{name}"') for name in table.schema.names if name not in known]
    feedback = table.schema.field("feedback").type
    known_feedback = {f.name for f in ARROW_SCHEMA.field("feedback").type}
    extra += [(f"feedback.{f.name}", f'feedback."{f.name}"') for f in feedback if f.name not in known_feedback]
    return extra
