"""A local OpenAI-compatible judge server for tests, benchmarks and `make demo`.

Serves `POST /v1/chat/completions` and `GET /v1/models` on 127.0.0.1 only. It
answers like an imperfect LLM judge of the demo world: it reads the
`Reference: <trace_id>` line of the prompt, looks the trace up in a truth table
and answers with realistic disagreement and a known bias (lenient on tone
failures). Faults (429 with Retry-After, 500, timeouts, malformed or off-schema
answers) can be injected by rate or by script, and every request body is
recorded so tests can check what left the client.

    python -m feedback_pipeline.demo.fake_openai --truth truth.parquet --port 8765
"""

import argparse
import hashlib
import json
import random
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    """A threaded fake endpoint; `url` is the OpenAI `base_url` (ends in /v1).

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
        self._in_flight = 0
        self._script = list(script)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd = _Server((HOST, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

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
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling (called from handler threads) -------------------------
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
        answer = simulate_verdict(found.group(1) if found else text[-200:], self.truth, categories, self.seed)
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512  # the default backlog of 5 drops bursts of new connections

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client that hung up is normal


def _schema_categories(body: Mapping[str, Any]) -> tuple[str, ...]:
    try:
        enum = body["response_format"]["json_schema"]["schema"]["properties"]["failure_category"]["enum"]
    except (KeyError, TypeError):
        return ()
    return tuple(c for c in enum if c is not None)


def _error(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one thread per client connection
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server._record(self.path, self.headers, None)
            if self.path.rstrip("/").endswith("/v1/models"):
                self._send(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "created": 0, "owned_by": "fake"}]})
            else:
                self._send(404, _error(404, f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            server._record(self.path, self.headers, body)
            if not self.path.rstrip("/").endswith("/v1/chat/completions"):
                return self._send(404, _error(404, f"no route {self.path}", "not_found"))
            if "response_format" in body and not server.supports_response_format:
                return self._send(400, _error(
                    400, "response_format is not supported by this model", "invalid_request_error"))
            fault = server._next_fault()
            with server._lock:
                server._in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server._in_flight)
            try:
                self._answer(fault, body)
            finally:
                with server._lock:
                    server._in_flight -= 1

        def _answer(self, fault: str, body: dict[str, Any]) -> None:
            if fault == "timeout":
                time.sleep(server.timeout_sleep_s)
                return self._send(504, _error(504, "upstream timed out", "server_error"))
            time.sleep(server.latency_s)
            if fault == "429":
                return self._send(
                    429, _error(429, "Rate limit reached", "rate_limit_error"),
                    {"Retry-After": f"{server.retry_after_s:g}"},
                )
            if fault == "401":
                echoed = self.headers.get("Authorization", "")
                return self._send(401, _error(
                    401, f"Incorrect API key provided: {echoed}", "invalid_request_error"))
            if fault == "500":
                return self._send(500, _error(500, "The server had an error", "server_error"))
            self._send(*server._completion(body, fault))

        def _send(self, status: int, payload: Any, headers: Mapping[str, str] = {}) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout fired first)

    return Handler


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
    print(f"fake OpenAI judge at {server.url} ({len(server.truth)} known traces)", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
