"""Tracing-export ingest speed: >= 200k spans per format (OTLP/JSON, Phoenix, Langfuse blob
export, LangSmith runs) through `parse_landing` (detect, read, assemble, validate, de-duplicate)
on an in-memory DuckDB connection. Prints spans/s and turns/s per format, and the time of the
Python step per trace (message flattening, feedback, record) inside it. Floor (issue #15): the
OTLP path converts >= 50k spans/s on this 2-core machine.

    .venv/bin/python benchmarks/sources.py [--spans 200000] [--only otlp]
"""

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from feedback_pipeline.ingest import parse
from feedback_pipeline.ingest.sources import turns

T0 = 1794907800 * 10**9  # 2026-11-17T09:30:00Z
SPANS_PER_TRACE = 5  # agent root, 2 LLM calls, 2 tool calls


def _s(v):
    return {"stringValue": v}


def _otlp_trace(i: int) -> list[dict]:
    i += 1  # an all-zero trace id is no id (OTLP): start at 1
    trace, root, t = f"{i:032x}", f"{i:015x}0", T0 + i * 10**9
    def span(n, parent, name, attrs, start, end, error=False):
        return {"traceId": trace, "spanId": f"{i:015x}{n}", "parentSpanId": parent, "name": name,
                "startTimeUnixNano": str(t + start * 10**6), "endTimeUnixNano": str(t + end * 10**6),
                "attributes": [{"key": k, "value": _s(v)} for k, v in attrs.items()],
                "status": {"code": 2} if error else {}}
    return [
        span(0, "", "invoke_agent refunds", {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "refunds",
            "gen_ai.conversation.id": f"c{i // 3}", "user.id": f"u{i % 997}",
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": f"Where is my refund for order {i}? It has been a week."}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": f"Refund {i} was issued yesterday; expect it in 3-5 days."}]}])},
            0, 2300),
        span(1, root, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, 10, 900),
        span(2, root, "execute_tool lookup_order", {"gen_ai.operation.name": "execute_tool",
                                                    "gen_ai.tool.name": "lookup_order"}, 900, 940),
        span(3, root, "execute_tool issue_refund", {"gen_ai.operation.name": "execute_tool",
                                                    "gen_ai.tool.name": "issue_refund"}, 950, 1200, i % 10 == 0),
        span(4, root, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                      "gen_ai.response.model": "gpt-4o-2024-08-06"}, 1200, 2290),
    ]


def write_otlp(landing: Path, traces: int) -> None:
    folder = landing / "otel"
    folder.mkdir(parents=True)
    per_line, per_file = 50, traces // 4 + 1
    for f, first in enumerate(range(0, traces, per_file)):
        lines = []
        for start in range(first, min(first + per_file, traces), per_line):
            spans = [s for i in range(start, min(start + per_line, first + per_file, traces)) for s in _otlp_trace(i)]
            lines.append(json.dumps({"resourceSpans": [{"resource": {"attributes": [
                {"key": "service.name", "value": _s("refunds-bot")}]}, "scopeSpans": [{"spans": spans}]}]}))
        data = ("\n".join(lines) + "\n").encode()
        path = folder / (f"traces-{f}.jsonl.gz" if f % 2 else f"traces-{f}.jsonl")
        path.write_bytes(gzip.compress(data, 1) if f % 2 else data)


def _flat(i: int) -> list[dict]:
    """(role, start_ms, end_ms, name, input, output, model) per span of trace i."""
    return [("agent", 0, 2300, "refunds", f"Where is my refund for order {i}?", f"Refund {i} was issued.", None),
            ("llm", 10, 900, "chat", f"Where is my refund for order {i}?", "calling tools", "gpt-4o"),
            ("tool", 900, 940, "lookup_order", None, None, None),
            ("tool", 950, 1200, "issue_refund", None, None, None),
            ("llm", 1200, 2290, "chat", None, f"Refund {i} was issued.", "gpt-4o")]


def _iso(ns: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()


def write_phoenix(landing: Path, traces: int) -> None:
    (landing / "phoenix").mkdir(parents=True)
    kinds = {"agent": "AGENT", "llm": "LLM", "tool": "TOOL"}
    with open(landing / "phoenix" / "spans.jsonl", "w") as out:
        for i in range(1, traces + 1):
            t = T0 + i * 10**9
            for n, (role, a, b, name, inp, outp, model) in enumerate(_flat(i)):
                attrs = {"openinference.span.kind": kinds[role], "session.id": f"c{i // 3}"}
                if inp:
                    attrs["input.value"] = inp
                if outp:
                    attrs["output.value"] = outp
                if model:
                    attrs["llm.model_name"] = model
                out.write(json.dumps({"name": name, "span_kind": kinds[role],
                                      "parent_id": None if n == 0 else f"{i:015x}0",
                                      "context": {"trace_id": f"{i:032x}", "span_id": f"{i:015x}{n}"},
                                      "start_time": _iso(t + a * 10**6), "end_time": _iso(t + b * 10**6),
                                      "status_code": "OK", "attributes": attrs}) + "\n")


def write_langfuse(landing: Path, traces: int) -> None:
    folder = landing / "langfuse"
    folder.mkdir(parents=True)
    types = {"llm": "GENERATION", "tool": "TOOL"}
    with open(folder / "traces.jsonl", "w") as tr, open(folder / "observations.jsonl", "w") as ob, \
            open(folder / "scores.jsonl", "w") as sc:
        for i in range(1, traces + 1):
            t = T0 + i * 10**9
            spans = _flat(i)
            tr.write(json.dumps({"id": f"t{i}", "timestamp": _iso(t)[:-6].replace("T", " "), "name": "refunds",
                                 "session_id": f"c{i // 3}", "user_id": f"u{i % 997}", "input": spans[0][4],
                                 "output": spans[0][5], "project_id": "p", "metadata": {}}) + "\n")
            for n, (role, a, b, name, inp, outp, model) in enumerate(spans[1:], 1):
                ob.write(json.dumps({"id": f"o{i}-{n}", "trace_id": f"t{i}", "type": types[role],
                                     "parent_observation_id": None, "start_time": _iso(t + a * 10**6),
                                     "end_time": _iso(t + b * 10**6), "name": name, "input": inp, "output": outp,
                                     "provided_model_name": model}) + "\n")
            if i % 20 == 0:
                sc.write(json.dumps({"id": f"s{i}", "trace_id": f"t{i}", "name": "user-feedback", "value": 1,
                                     "data_type": "BOOLEAN", "source": "API", "timestamp": _iso(t)}) + "\n")


def write_langsmith(landing: Path, traces: int) -> None:
    (landing / "langsmith").mkdir(parents=True)
    with open(landing / "langsmith" / "runs.jsonl", "w") as out:
        for i in range(1, traces + 1):
            t, root = T0 + i * 10**9, f"00000000-0000-4000-8000-{i:012x}"
            for n, (role, a, b, name, inp, outp, model) in enumerate(_flat(i)):
                rid = root if n == 0 else f"0000000{n}-0000-4000-8000-{i:012x}"
                out.write(json.dumps({
                    "id": rid, "trace_id": root, "parent_run_id": None if n == 0 else root, "name": name,
                    "run_type": "chain" if role == "agent" else role,
                    "start_time": _iso(t + a * 10**6)[:-6], "end_time": _iso(t + b * 10**6)[:-6],
                    "inputs": {"messages": [{"role": "user", "content": inp}]} if inp else {},
                    "outputs": {"output": outp} if outp else {},
                    "extra": {"metadata": {"thread_id": f"c{i // 3}", **({"ls_model_name": model} if model else {})}},
                    "error": None}) + "\n")


WRITERS = {"otlp": write_otlp, "phoenix": write_phoenix, "langfuse": write_langfuse, "langsmith": write_langsmith}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--only", choices=sorted(WRITERS))
    args = parser.parse_args()
    traces = -(-args.spans // SPANS_PER_TRACE)
    loop_s = [0.0]
    build = turns.build_turns

    def timed(*a, **k):
        started = time.perf_counter()
        try:
            return build(*a, **k)
        finally:
            loop_s[0] += time.perf_counter() - started

    import feedback_pipeline.ingest.sources as sources
    sources.build_turns = timed
    for name, write in WRITERS.items():
        if args.only and name != args.only:
            continue
        work = Path(tempfile.mkdtemp(prefix=f"bench_sources_{name}_"))
        try:
            write(work, traces)
            loop_s[0] = 0.0
            with duckdb.connect() as con:
                started, cpu = time.perf_counter(), time.process_time()
                result = parse.parse_landing(con, work)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                loaded = con.execute("SELECT count(*) FROM parsed_traces").fetchone()[0]
            spans = int(result.spans["rows_read"].sum())
            print(f"{name:9s}: {spans:,} source rows ({traces:,} traces) in {elapsed:.2f} s = "
                  f"{spans / elapsed:,.0f} spans/s, {loaded / elapsed:,.0f} turns/s "
                  f"(loaded {loaded:,}; CPU {cpu:.2f} s = {spans / cpu:,.0f} spans per CPU-second; "
                  f"Python step per trace incl. its query {loop_s[0]:.2f} s = "
                  f"{loop_s[0] / max(loaded, 1) * 1e6:.1f} us/turn)")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
