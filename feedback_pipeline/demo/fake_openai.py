"""A local OpenAI-compatible judge server for tests, benchmarks and `make demo`.

Serves `POST /v1/chat/completions` and `GET /v1/models` on 127.0.0.1 only. It
answers like an imperfect LLM judge of the demo world: it reads the
`Reference: <trace_id>` line of the prompt, looks the trace up in a truth table
(or, for an answer of the demo agent, `fake_agent`, reads its `[demo truth: …]` line)
and answers with realistic disagreement and a known bias (lenient on tone
failures). Faults (429 with Retry-After, 500, timeouts, malformed or off-schema
answers) can be injected by rate or by script, and every request body is
recorded so tests can check what left the client.

    python -m feedback_pipeline.demo.fake_openai --truth truth.parquet --port 8765
"""

import argparse
import asyncio
import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import polars as pl

HOST = "127.0.0.1"
FAULT_KINDS = ("429", "500", "timeout", "malformed", "wrong_enum")
# "401" echoes the Authorization header in its message, as real endpoints echo keys.
SCRIPT_ONLY_FAULTS = ("401",)
DEFAULT_CATEGORIES = (
    "could_not_answer", "wrong_information", "tone_wrong", "tool_failed",
    "policy_violation", "other",
)
# Truth-table categories named after escalation reasons map onto rubric categories.
CATEGORY_ALIASES = {"agent_could_not_answer": "could_not_answer"}

# The simulated judge's imperfections (per true failure / true pass).
TONE_LENIENCY = 0.60     # true tone_wrong failures judged pass
MISSED_FAILURE = 0.06    # other true failures judged pass
WRONG_CATEGORY = 0.08    # detected failures given another category
FALSE_FAIL = 0.03        # true passes judged fail
UNKNOWN_FAIL_RATE = 0.25  # references not in the truth table

_REFERENCE = re.compile(r"^Reference:\s*(\S+)", re.MULTILINE)
# An answer of the demo agent (`fake_agent`) carries its truth: read when the reference is unknown.
_MARKER = re.compile(r"\[demo truth: (pass|fail)(?: ([a-z_]+))?\]")


def truth_marker(verdict: str, category: str | None) -> str:
    """The line the demo agent ends an answer with: the answer's true verdict (and category)."""
    return f"[demo truth: {verdict}{f' {category}' if category else ''}]"


def _uniforms(seed: int, trace_id: str) -> tuple[float, float, float]:
    digest = hashlib.sha256(f"{seed}:{trace_id}".encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in (0, 4, 8))


def simulate_verdict(
    trace_id: str,
    truth: Mapping[str, tuple[str, str | None]],
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    seed: int = 0,
) -> dict[str, Any]:
    """The simulated judge's answer for one trace: deterministic per (seed, trace_id)."""
    u_verdict, u_category, u_pick = _uniforms(seed, trace_id)
    pick = categories[int(u_pick * len(categories))]
    known = truth.get(trace_id)
    if known is None:
        if u_verdict < UNKNOWN_FAIL_RATE:
            return _answer("fail", pick, "The response does not resolve the request.")
        return _answer("pass", None, "The response addresses the request.")
    true_verdict, true_category = known
    if true_verdict == "pass":
        if u_verdict < FALSE_FAIL:
            return _answer("fail", pick, "The response seems incomplete.")
        return _answer("pass", None, "The response answers the question correctly and politely.")
    category = CATEGORY_ALIASES.get(true_category or "other", true_category or "other")
    if category not in categories:
        category = "other" if "other" in categories else categories[-1]
    miss = TONE_LENIENCY if category == "tone_wrong" else MISSED_FAILURE
    if u_verdict < miss:
        return _answer("pass", None, "The response addresses the request.")
    if u_category < WRONG_CATEGORY:
        others = [c for c in categories if c != category] or [category]
        category = others[int(u_pick * len(others))]
    return _answer("fail", category, f"The response shows a {category.replace('_', ' ')} problem.")


def _answer(verdict: str, category: str | None, rationale: str) -> dict[str, Any]:
    return {"verdict": verdict, "failure_category": category, "rationale": rationale}


def load_truth(truth: str | Path | pl.DataFrame | Mapping | None) -> dict[str, tuple[str, str | None]]:
    """trace_id -> (true_verdict, true_failure_category) from a parquet path, frame or dict."""
    if truth is None:
        return {}
    if isinstance(truth, (str, Path)):
        truth = pl.read_parquet(truth)
    if isinstance(truth, pl.DataFrame):
        rows = truth.select("trace_id", "true_verdict", "true_failure_category").iter_rows()
        return {t: (v, c) for t, v, c in rows}
    return {
        t: (v["true_verdict"], v.get("true_failure_category")) if isinstance(v, Mapping) else tuple(v)
        for t, v in truth.items()
    }


class FakeOpenAIServer:
    """A fake endpoint served by an asyncio loop; `url` is the OpenAI `base_url` (ends in /v1).

    fault_rate: share of chat requests answered with a fault drawn from fault_kinds.
    script: faults for the first requests in arrival order ("ok" = no fault).
    timeout_sleep_s: how long a "timeout" fault stalls (longer than the client waits).
    """

    def __init__(
        self,
        truth: str | Path | pl.DataFrame | Mapping | None = None,
        *,
        port: int = 0,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = FAULT_KINDS,
        script: Sequence[str] = (),
        retry_after_s: float = 0.05,
        timeout_sleep_s: float = 2.0,
        supports_response_format: bool = True,
        seed: int = 0,
        model: str = "fake-judge-1",
    ) -> None:
        unknown = (set(fault_kinds) | set(script)) - {*FAULT_KINDS, *SCRIPT_ONLY_FAULTS, "ok"}
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.truth = load_truth(truth)
        self.latency_s = latency_s
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.retry_after_s = retry_after_s
        self.timeout_sleep_s = timeout_sleep_s
        self.supports_response_format = supports_response_format
        self.seed = seed
        self.model = model
        self.requests: list[dict[str, Any]] = []  # {"time", "path", "headers" (lower-case names), "body"}
        self.max_in_flight = 0  # most chat requests being handled at once
        self.connections_opened = 0  # TCP connections accepted: a client that reuses them opens few
        self._in_flight = 0
        self._script = list(script)
        self._rng = random.Random(seed)
        # Guards what other threads read (requests, counters); handlers run on one loop thread.
        self._lock = threading.Lock()
        # Bound now, so `url` is known (and connections queue) before the loop serves.
        self._socket = socket.create_server((HOST, port), backlog=512)
        self._port = self._socket.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def call_count(self) -> int:
        """Chat-completion requests received (every HTTP attempt, retries included)."""
        with self._lock:
            return sum(r["path"].endswith("/chat/completions") for r in self.requests)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.requests if r["body"] is not None]

    def start(self) -> "FakeOpenAIServer":
        """Serve from a daemon thread; returns once the loop accepts connections."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        return self

    def serve_forever(self, ready: threading.Event | None = None) -> None:
        """Serve in this thread until `stop` (or KeyboardInterrupt)."""
        asyncio.run(self._serve(ready))

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass  # the loop finished meanwhile
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving (on the loop's thread) -----------------------------------------
    async def _serve(self, ready: threading.Event | None) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        connections: set[asyncio.Task] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            connections.add(task)
            with self._lock:
                self.connections_opened += 1
            try:
                await self._connection(reader, writer)
            finally:
                connections.discard(task)

        server = await asyncio.start_server(on_connect, sock=self._socket)
        if ready is not None:
            ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(connections):  # idle keep-alive connections and stalled "timeouts"
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests in turn until the client closes it (HTTP/1.1 keep-alive).

        Hand-written rather than http.server's thread per connection, which spent more CPU
        than the client it served; it reads only what OpenAI clients send: a request line,
        headers and a Content-Length body (chunked bodies are refused with 411).
        """
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return  # the client closed the connection (or sent garbage)
                method, path, headers = _parse_head(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    writer.write(_response_bytes(411, _error(411, "Content-Length required", "invalid_request_error"),
                                                 {"Connection": "close"}))
                    return
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                status, payload, extra = await self._respond(method, path, headers, raw)
                writer.write(_response_bytes(status, payload, extra))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (e.g. its timeout fired first)
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, headers: Mapping[str, str],
                       raw: bytes) -> tuple[int, Any, Mapping[str, str]]:
        """(status, JSON payload, extra headers) for one request."""
        if method == "GET":
            self._record(path, headers, None)
            if path.rstrip("/").endswith("/v1/models"):
                return 200, {"object": "list", "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}, {}
            return 404, _error(404, f"no route {path}", "not_found"), {}
        if method != "POST":
            return 501, _error(501, f"unsupported method {method}", "not_implemented"), {}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        self._record(path, headers, body)
        if not path.rstrip("/").endswith("/v1/chat/completions"):
            return 404, _error(404, f"no route {path}", "not_found"), {}
        if "response_format" in body and not self.supports_response_format:
            return 400, _error(400, "response_format is not supported by this model", "invalid_request_error"), {}
        fault = self._next_fault()
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._answer(fault, body, headers)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, fault: str, body: dict[str, Any],
                      headers: Mapping[str, str]) -> tuple[int, Any, Mapping[str, str]]:
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
            return 504, _error(504, "upstream timed out", "server_error"), {}
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            return 429, _error(429, "Rate limit reached", "rate_limit_error"), {"Retry-After": f"{self.retry_after_s:g}"}
        if fault == "401":
            echoed = headers.get("authorization", "")
            return 401, _error(401, f"Incorrect API key provided: {echoed}", "invalid_request_error"), {}
        if fault == "500":
            return 500, _error(500, "The server had an error", "server_error"), {}
        status, payload = self._completion(body, fault)
        return status, payload, {}

    # -- request handling (what a subclass may change) --------------------------
    def _record(self, path: str, headers: Mapping[str, str], body: Any) -> None:
        with self._lock:
            names = {k.lower(): v for k, v in headers.items()}
            self.requests.append({"time": time.monotonic(), "path": path, "headers": names, "body": body})

    def _next_fault(self) -> str:
        """The fault for the next answerable chat request ("ok" = none)."""
        with self._lock:
            if self._script:
                return self._script.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
            return "ok"

    def _completion(self, body: dict[str, Any], fault: str) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages") or []
        text = "\n".join(str(m.get("content", "")) for m in messages)
        found = _REFERENCE.search(text)
        categories = _schema_categories(body) or DEFAULT_CATEGORIES
        reference = found.group(1) if found else text[-200:]
        truth, marked = self.truth, _MARKER.search(text)
        if reference not in truth and marked:  # a replayed answer of the demo agent
            truth = {reference: (marked.group(1), marked.group(2))}
        answer = simulate_verdict(reference, truth, categories, self.seed)
        if fault == "wrong_enum":
            answer = {**answer, "verdict": "maybe"} if answer["verdict"] == "pass" else {
                **answer, "failure_category": "rude_tone"}
        content = json.dumps(answer)
        if fault == "malformed":
            content = "Sure! Here is my assessment: " + content[: len(content) // 2]
        elif "response_format" not in body:
            content = f"```json\n{content}\n```"  # plain-JSON mode: models like code fences
        prompt_tokens = max(1, len(text) // 4) + 4 * len(messages)
        completion_tokens = max(1, len(content) // 4)
        return 200, {
            "id": f"chatcmpl-{hashlib.sha1(text.encode()).hexdigest()[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path, headers with lower-case names) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _response_bytes(status: int, payload: Any, headers: Mapping[str, str] = {}) -> bytes:
    data = json.dumps(payload).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def _schema_categories(body: Mapping[str, Any]) -> tuple[str, ...]:
    try:
        enum = body["response_format"]["json_schema"]["schema"]["properties"]["failure_category"]["enum"]
    except (KeyError, TypeError):
        return ()
    return tuple(c for c in enum if c is not None)


def _error(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def start_server_process(module: str, *args: str, port: int = 0) -> tuple[subprocess.Popen, str]:
    """`python -m <module> --port <port> <args>` in its own process (so it does not share the
    caller's GIL), once it answers GET /v1/models; returns (process, base URL)."""
    import urllib.request

    with socket.socket() as probe:
        probe.bind((HOST, port))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}/v1"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/models", timeout=0.5)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{module} did not start")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", help="parquet with trace_id, true_verdict, true_failure_category")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--no-response-format", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        args.truth, port=args.port, latency_s=args.latency_ms / 1000, fault_rate=args.fault_rate,
        supports_response_format=not args.no_response_format, seed=args.seed,
    )
    serve_until_stopped(server, f"fake OpenAI judge at {server.url} ({len(server.truth)} known traces)")


def serve_until_stopped(server: FakeOpenAIServer, banner: str) -> None:
    """A command line's server: print the banner, serve until interrupted or terminated."""
    print(banner, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
