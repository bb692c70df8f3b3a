"""The `openai` client the judge and the agent replay call through (any OpenAI-compatible
endpoint), on openai's own aiohttp transport: about a third of httpx's client CPU per
call, which is what bounds judge throughput on 2 cores. Same retries, timeouts and errors
(they live above the transport)."""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context the transport would build itself (system CAs; SSL_CERT_FILE and
    SSL_CERT_DIR honoured), once per process: reading the CA store costs ~40 ms, and every
    step that calls a model makes a new client."""
    import httpx2

    return httpx2.create_ssl_context()


def async_openai(base_url: str | None, api_key: str | None, timeout_s: float, max_retries: int) -> openai.AsyncOpenAI:
    import openai

    return openai.AsyncOpenAI(
        base_url=base_url or None,
        # Self-hosted endpoints often need no key; the client insists on one.
        api_key=api_key or "no-key",
        timeout=timeout_s,
        max_retries=max_retries,
        http_client=openai.DefaultAioHttpClient(timeout=timeout_s, verify=_tls_context()),
    )
