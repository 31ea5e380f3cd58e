"""An async client for any OpenAI-compatible endpoint, with retries and backoff on transient failures.

Talks HTTP only (httpx), so it works against tuneloop's server, a bare vLLM server, or any other
OpenAI-compatible service. Reads tuneloop's `x-tuneloop-served-by` header (name@version) when present, and
names a requested adapter version in Ray Serve's `serve_multiplexed_model_id` header, so that a tuneloop
service with several replicas sends it to one that holds the version.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from evals.errors import EndpointError
from evals.prompts import Message, messages_to_text

SERVED_BY_HEADER = "x-tuneloop-served-by"
USER_HEADER = "x-tuneloop-user"
ROUTING_HEADER = "serve_multiplexed_model_id"
"""Ray Serve's routing header: tuneloop replicas holding the version it names get the request."""
_VERSION_ID = re.compile(r"^(?P<name>[^@]+)@(?P<hex>[0-9a-fA-F]{12,64})$")


def routing_id(model: str) -> str | None:
    """The adapter-aware routing id of `model` (tuneloop's `name@<12 hex>`) when it names a version by
    at least 12 hex characters, else None (an alias or the base: no header). Other servers ignore it."""
    match = _VERSION_ID.match(model)
    return f"{match['name']}@{match['hex'][:12].lower()}" if match else None


Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again."""

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    retry_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({408, 425, 429, 500, 502, 503, 504})
    )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): exponential with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class Completion:
    """One successful generation."""

    text: str
    model: str | None
    served_by: str | None
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    attempts: int
    response_id: str | None


class ChatEndpoint:
    """Sends chat/completions requests to `base_url` (e.g. http://127.0.0.1:8000/v1)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        all_headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            all_headers["authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=all_headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def __aenter__(self) -> ChatEndpoint:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(
        self,
        model: str,
        messages: Sequence[Message],
        settings: Mapping[str, Any],
        *,
        api: str = "chat",
        user: str | None = None,
    ) -> Completion:
        """Generate one answer; retries transient failures, raises `EndpointError` when it gives up."""
        if api == "chat":
            path, body = "/chat/completions", {"model": model, "messages": list(messages), **settings}
        else:
            path, body = "/completions", {"model": model, "prompt": messages_to_text(messages), **settings}
        headers = {}
        if rid := routing_id(model):
            headers[ROUTING_HEADER] = rid
        if user:
            body["user"] = user
            headers[USER_HEADER] = user
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                response = await self._client.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:
                unreachable = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                error = EndpointError(
                    f"{type(exc).__name__} talking to {self.base_url}{path}: {exc or 'no detail'}",
                    transient=True,
                    unreachable=unreachable,
                )
                retry_after = None
            else:
                latency_ms = (time.perf_counter() - started) * 1000.0
                if response.status_code == 200:
                    return self._parse(response, api, latency_ms, attempt)
                transient = response.status_code in self.retry.retry_statuses
                error = EndpointError(
                    f"HTTP {response.status_code} from {self.base_url}{path}: {_error_message(response)}",
                    transient=transient,
                    status_code=response.status_code,
                )
                retry_after = _retry_after(response)
            if not error.transient or attempt >= self.retry.max_attempts:
                if attempt > 1:
                    error.args = (f"{error.args[0]} (after {attempt} attempts)",)
                raise error
            await self._sleep(self.retry.delay(attempt, retry_after))

    def _parse(self, response: httpx.Response, api: str, latency_ms: float, attempts: int) -> Completion:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"] if api == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointError(
                f"malformed response from {self.base_url}: {response.text[:200]!r}", transient=False
            ) from exc
        usage = payload.get("usage") or {}
        return Completion(
            text=text or "",
            model=payload.get("model"),
            served_by=response.headers.get(SERVED_BY_HEADER),
            latency_ms=latency_ms,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            attempts=attempts,
            response_id=payload.get("id"),
        )


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if payload.get("detail"):
            return str(payload["detail"])[:300]
    return response.text[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
