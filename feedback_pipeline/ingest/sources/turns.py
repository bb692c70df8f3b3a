"""Assembled traces -> contract records (typed Arrow rows, one per turn) and rejects, one Python step per trace.

For each trace with a root: the last user message and the final answer (`messages.py`,
root span first, then its first / last LLM call), feedback (`feedback.py`), agent
and context; the rows then go through the contract's own validation (the typed fast
path's value rules; a row breaking one is quarantined with its JSON text). A trace
with no user message is rejected here with the reason. Loop per trace, not per span
(measured in benchmarks/sources.py). Held and orphan traces are `pending.py`'s.
"""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa

from feedback_pipeline.ingest.arrow_fast import ARROW_SCHEMA, FAST_SCHEMA
from feedback_pipeline.ingest.sources.assemble import IO_SOURCES, turns_sql
from feedback_pipeline.ingest.sources.config import SourcesConfig
from feedback_pipeline.ingest.sources.feedback import map_feedback
from feedback_pipeline.ingest.sources.messages import decoded, final_text, user_message

# Keys of a trace's metadata that name contract fields (else the metadata stays in `extra`).
_FROM_METADATA = ("vertical", "channel", "intent", "prompt_version", "retrieval_version")
_NO_USER = ("{where}: trace {trace} has no user message: none of gen_ai.input.messages, llm.input_messages.N, "
            "gen_ai.prompt.N, gen_ai.user.message events or input.value on its root span ({root}) or first LLM "
            "span holds one; record the user's message on the root (or agent) span and re-export")
_NO_AGENT = ("{where}: trace {trace} names no agent (no gen_ai.agent.name, agent span, service.name or root "
             "name); set `agent_id` for this folder in landing/sources.yaml")


def _load(text: str | None):
    return json.loads(text) if text else None


def build_turns(con: duckdb.DuckDBPyConnection, config: SourcesConfig) -> tuple[pa.Table, list[str], list[tuple], list[tuple]]:
    """(records: rows in FAST_SCHEMA, their position kinds (line, row, element); rejects: rows
    of `source_rejects` without week; statuses: (source_format, trace_id, 'turn' | 'quarantined', root_ns))."""
    cursor = con.execute(turns_sql())
    names = [d[0] for d in cursor.description]
    io_fields = [[(n[len(alias) + len(side) + 2:], i) for i, n in enumerate(names) if n.startswith(f"{alias}_{side}_")]
                 for alias, side in IO_SOURCES]
    options_of: dict[str, object] = {}
    records, files, lines, kinds, extras, rejects, statuses = [], [], [], [], [], [], {}
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        root_in, root_out, llm_in, llm_out = ({k: values[i] for k, i in fields} for fields in io_fields)
        user = user_message(root_in)
        if user is None:
            user = user_message(llm_in)
        if row["source_file"] not in options_of:
            options_of[row["source_file"]] = config.for_file(row["source_file"])
        options = options_of[row["source_file"]]
        agent = options.agent_id or row["agent"] or row["root_name"]
        key = (row["source_format"], row["trace_id"])
        problem = (_NO_USER if user is None else _NO_AGENT if not agent else None)
        if problem:
            reason = problem.format(where=f"{row['pos_kind']} {row['source_line']}", trace=row["trace_id"], root=row["root_span"])
            rejects.append((row["source_file"], row["source_line"], row["trace_id"],
                            "user_message" if user is None else "agent_id", reason,
                            json.dumps({"root_input": root_in, "llm_input": llm_in})[:2000]))
            statuses.setdefault(key, ("quarantined", row["start_ns"]))
            continue
        answer = final_text(root_out)
        if answer is None:
            answer = final_text(llm_out)
        scores = (_load(row["scores"]) or []) + [
            {**e, "origin": "evaluator"} for e in (_load(row["evaluations"]) or []) if e]
        feedback, extra = map_feedback([{k: decoded(v) if k == "value" else v for k, v in s.items()}
                                        for s in scores], options.feedback)
        context = {k: decoded(v) for k, v in (_load(row["context"]) or {}).items() if v is not None}
        metadata = context.get("metadata") if isinstance(context.get("metadata"), dict) else {}
        record = {
            "trace_id": row["trace_id"], "conversation_id": row["conversation_id"],
            "turn_index": row["turn_index"], "timestamp": row["start_ns"] // 1000, "agent_id": agent,
            **{k: None if metadata.get(k) is None else str(metadata[k]) for k in _FROM_METADATA},
            "user_id": row["user_id"], "user_message": user, "agent_response": answer or "",
            "tool_calls": row["tool_calls"], "model": row["model"],
            "latency_ms": max(0, (row["end_ns"] - row["start_ns"]) // 1_000_000) if row["end_ns"] else 0,
            "feedback": feedback,
            "source_format": row["source_format"], "source_trace_id": row["source_trace_id"],
            "source_span_id": row["source_span_id"],
        }
        # What the contract has no field for: kept in `extra` (as a contract record's unknown fields).
        extra = {"source_spans": row["n_spans"], **({"source_context": context} if context else {}), **extra}
        if row["end_ns"] is None:
            extra["latency_unknown"] = True
        records.append(record)
        extras.append(json.dumps(extra, ensure_ascii=False))
        files.append(row["source_file"])
        lines.append(row["source_line"])
        kinds.append(row["pos_kind"])
        statuses[key] = ("turn", row["start_ns"])
    table = pa.Table.from_pylist(records, schema=ARROW_SCHEMA)
    table = pa.Table.from_arrays(
        table.columns + [pa.array(lines, pa.int64()), pa.array(files, pa.string()), pa.array(extras, pa.string())],
        schema=FAST_SCHEMA)
    return table, kinds, rejects, [(*k, *v) for k, v in statuses.items()]
