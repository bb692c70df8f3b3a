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
from feedback_pipeline.ingest.sources.assemble import FROM_METADATA, IO_SOURCES, turns_sql
from feedback_pipeline.ingest.sources.config import SourcesConfig
from feedback_pipeline.ingest.sources.feedback import map_feedback
from feedback_pipeline.ingest.sources.messages import decoded, final_text, user_message

_NO_USER = ("{where}: trace {trace} has no user message: none of gen_ai.input.messages, llm.input_messages.N, "
            "gen_ai.prompt.N, gen_ai.user.message events or input.value on its root span ({root}) or first LLM "
            "span holds one; record the user's message on the root (or agent) span and re-export")
_NO_AGENT = ("{where}: trace {trace} names no agent (no gen_ai.agent.name, agent span, service.name or root "
             "name); set `agent_id` for this folder in landing/sources.yaml")


def _load(text: str | None):
    return json.loads(text) if text else None


# Contract columns the query gives as they are (the Python step adds the others).
_AS_QUERIED = ("trace_id", "conversation_id", "turn_index", "timestamp", "user_id", "tool_calls", "latency_ms",
               "model", "source_format", "source_trace_id", "source_span_id", "source_line", "source_file",
               *FROM_METADATA)
_PY_COLUMNS = ("source_file", "source_line", "pos_kind", "source_format", "trace_id", "root_span", "start_ns",
               "agent", "root_name", "scores", "evaluations", "extra")


def build_turns(con: duckdb.DuckDBPyConnection, config: SourcesConfig) -> tuple[pa.Table, list[str], list[tuple], list[tuple]]:
    """(records: rows in FAST_SCHEMA, their position kinds (line, row, element); rejects: rows
    of `source_rejects` without week; statuses: (source_format, trace_id, 'turn' | 'quarantined', root_ns)).

    Columnar: the query's Arrow columns are kept as they are; Python reads only the values it
    must interpret (messages, scores, context) and adds the columns it derives."""
    queried = con.execute(turns_sql()).fetch_arrow_table()
    io_names = [[n for n in queried.column_names if n.startswith(f"{alias}_{side}_")] for alias, side in IO_SOURCES]
    py = {n: queried.column(n).to_pylist() for n in {*_PY_COLUMNS, *(n for names in io_names for n in names)}}
    ios = []
    for (alias, side), names in zip(IO_SOURCES, io_names):
        keys = [n[len(alias) + len(side) + 2:] for n in names]
        ios.append([dict(zip(keys, values)) for values in zip(*(py[n] for n in names))])
    options_of: dict[str, object] = {}
    out = {k: [] for k in ("user_message", "agent_response", "agent_id", "feedback", "extra")}
    keep, kinds, rejects, statuses = [], [], [], {}
    for i in range(queried.num_rows):
        file, root_in, root_out, llm_in, llm_out = py["source_file"][i], ios[0][i], ios[1][i], ios[2][i], ios[3][i]
        user = user_message(root_in)
        if user is None:
            user = user_message(llm_in)
        if file not in options_of:
            options_of[file] = config.for_file(file)
        options = options_of[file]
        agent = options.agent_id or py["agent"][i] or py["root_name"][i]
        key = (py["source_format"][i], py["trace_id"][i])
        problem = _NO_USER if user is None else _NO_AGENT if not agent else None
        keep.append(problem is None)
        if problem:
            reason = problem.format(where=f"{py['pos_kind'][i]} {py['source_line'][i]}", trace=py["trace_id"][i],
                                    root=py["root_span"][i])
            rejects.append((file, py["source_line"][i], py["trace_id"][i],
                            "user_message" if user is None else "agent_id", reason,
                            json.dumps({"root_input": root_in, "llm_input": llm_in})[:2000]))
            statuses.setdefault(key, ("quarantined", py["start_ns"][i]))
            continue
        answer = final_text(root_out)
        if answer is None:
            answer = final_text(llm_out)
        scores = (_load(py["scores"][i]) or []) + [
            {**e, "origin": "evaluator"} for e in (_load(py["evaluations"][i]) or []) if e]
        feedback, extra = map_feedback([{k: decoded(v) if k == "value" else v for k, v in s.items()}
                                        for s in scores], options.feedback)
        # What the contract has no field for: kept in `extra` (as a contract record's unknown
        # fields); the query wrote the span count and context, the scores add theirs.
        out["extra"].append(json.dumps({**json.loads(py["extra"][i]), **extra}, ensure_ascii=False)
                            if extra else py["extra"][i])
        out["user_message"].append(user)
        out["agent_response"].append(answer or "")
        out["agent_id"].append(agent)
        out["feedback"].append(feedback)
        kinds.append(py["pos_kind"][i])
        statuses[key] = ("turn", py["start_ns"][i])
    kept = queried.filter(pa.array(keep, pa.bool_())) if queried.num_rows else queried
    columns = {n: kept.column(n) for n in _AS_QUERIED}
    columns.update({k: pa.array(v, ARROW_SCHEMA.field(k).type if k in ARROW_SCHEMA.names else pa.string())
                    for k, v in out.items() if k != "feedback"})
    columns["feedback"] = pa.array(out["feedback"], ARROW_SCHEMA.field("feedback").type)
    table = pa.Table.from_arrays([columns[n] for n in FAST_SCHEMA.names], names=FAST_SCHEMA.names)
    return table.cast(FAST_SCHEMA), kinds, rejects, [(*k, *v) for k, v in statuses.items()]
