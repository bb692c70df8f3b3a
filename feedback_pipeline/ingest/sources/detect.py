"""Which format a landing file holds, told by its content (and by `sources.yaml` when pinned).

Reads at most the first 256 KiB of a file (gunzipped), finds the keys or columns of
its first record and names its kind: the contract, an OTLP request, a Phoenix span,
a Langfuse API trace or export table row, a LangSmith run or feedback record. Reading
and mapping the records is the format modules' job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from isal import igzip

from feedback_pipeline.ingest.sources.config import SourcesConfig

HEAD_BYTES = 256 << 10
# kind -> the `source_format` its turns carry
FAMILY = {
    "otlp": "otlp", "phoenix": "phoenix",
    "langfuse_api": "langfuse", "langfuse_traces": "langfuse", "langfuse_observations": "langfuse",
    "langfuse_scores": "langfuse",
    "langsmith_runs": "langsmith", "langsmith_feedback": "langsmith",
}
_DEFAULT_KIND = {"otlp": "otlp", "phoenix": "phoenix", "langfuse": "langfuse_api", "langsmith": "langsmith_runs"}
_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_.]*)"\s*:')


def container(name: str) -> str:
    """How the file's records are laid out: jsonl, json (one document or an array), csv, parquet."""
    base = name[:-3] if name.endswith(".gz") else name
    return {".parquet": "parquet", ".csv": "csv", ".json": "json"}.get(Path(base).suffix, "jsonl")


def _head(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        try:
            with igzip.open(path, "rb") as f:
                return f.read(HEAD_BYTES)
        except (OSError, EOFError, ValueError):
            return b""
    with open(path, "rb") as f:
        return f.read(HEAD_BYTES)


def first_record_keys(path: Path, layout: str) -> set[str]:
    """Keys (or column names) of the file's first record; nested `context`/`trace` keys
    are added as `context.x` / `trace.x`."""
    if layout == "parquet":
        import pyarrow.parquet as pq

        try:
            return set(pq.read_schema(path).names)
        except Exception:  # unreadable: the contract path quarantines the file
            return set()
    text = _head(path).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if layout == "csv":
        return {c.strip().strip('"') for c in text.split("\n", 1)[0].split(",")}
    if text.startswith("["):
        text = text[1:].lstrip()
    try:
        first, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:  # a long or broken first record: the keys it shows
        return set(_KEY.findall(text[:HEAD_BYTES]))
    if isinstance(first, dict) and isinstance(first.get("data"), list) and first["data"]:
        first = first["data"][0]  # an API page {"data": [...], "meta": ...}
    if not isinstance(first, dict):
        return set()
    keys = set(first)
    for nested in ("context", "trace"):
        if isinstance(first.get(nested), dict):
            keys |= {f"{nested}.{k}" for k in first[nested]}
    return keys


def classify(keys: set[str]) -> str:
    """The kind of record a key set belongs to ('contract' when it is none of the exports)."""
    if keys & {"resourceSpans", "resource_spans"}:
        return "otlp"
    if "observations" in keys or "trace.id" in keys:
        return "langfuse_api"
    if keys & {"run_type", "dotted_order", "parent_run_id"} or {"inputs", "trace_id"} <= keys:
        return "langsmith_runs"
    if {"run_id", "key"} <= keys:
        return "langsmith_feedback"
    if keys & {"context.trace_id", "context.span_id"} or {"span_kind", "attributes"} <= keys:
        return "phoenix"
    if "trace_id" in keys and keys & {"data_type", "string_value"} and "value" in keys:
        return "langfuse_scores"
    if "trace_id" in keys and keys & {"parent_observation_id", "start_time"} and "user_message" not in keys:
        return "langfuse_observations"
    if {"id", "timestamp"} <= keys and keys & {"session_id", "user_id", "bookmarked", "project_id"} \
            and not keys & {"trace_id", "user_message", "agent_response"}:
        return "langfuse_traces"
    return "contract"


def detect(path: Path, name: str, config: SourcesConfig) -> str:
    """The kind of `path` (relative `name`): its folder's pinned format, refined by content."""
    pinned = config.for_file(name).format
    if pinned == "contract":
        return "contract"
    kind = classify(first_record_keys(path, container(name)))
    if pinned is None or FAMILY.get(kind) == pinned:
        return kind
    return _DEFAULT_KIND[pinned]
