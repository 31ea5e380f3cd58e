"""The eval runner: one model, one suite, any OpenAI-compatible endpoint.

Generation runs on a bounded pool of concurrent requests with retries (see `evals.client`), shows a rich
progress bar, and appends every answer to `generations.jsonl` as it arrives, so an interrupted run resumes
where it stopped. When the endpoint goes down mid-run (several examples in a row find no server), the
runner stops asking, scores what it has, saves the partial results and says how to resume. Scoring then
runs each metric over the answered examples and the run is saved with per-example results (for paired
comparisons) and bootstrap intervals per metric and slice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from evals.client import ChatEndpoint, Completion, RetryPolicy
from evals.errors import EndpointError
from evals.example import Example
from evals.metrics import JudgeEndpoint, Metric, MetricInput, build_metric
from evals.metrics.judge import LlmJudge
from evals.results import (
    GENERATIONS_FILE,
    ExampleResult,
    MetricSummary,
    MetricValue,
    RunResult,
    dumps_json,
    read_jsonl,
)
from evals.stats.bootstrap import bootstrap_interval
from evals.suite import Suite, SuiteData, load_suite, load_suite_data
from evals.tasks import get_task

T = TypeVar("T")

_Pending = tuple[Example, list[dict[str, str]], str]
"""An example still to answer: the example, its request messages and the request's fingerprint."""


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to run): concurrency, retries, stopping rules, persistence."""

    concurrency: int = 8
    retry: RetryPolicy | None = None
    timeout_s: float = 120.0
    max_consecutive_unreachable: int = 3
    """Stop after this many examples in a row found no server (each after its own retries)."""
    max_rejections_before_success: int = 5
    """Stop when this many examples were rejected (4xx) before any succeeded: wrong model name, etc."""
    n_resamples: int = 1000
    progress: bool = False
    resume: bool = True


def run_id_for(suite: str, model: str, k_shot: int) -> str:
    """Default run folder name: suite, model and few-shot mode, filesystem-safe."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-") or "model"
    return f"{suite}__{slug}__{k_shot}shot"


def run_suite(
    suite: str | Path | Suite,
    model: str,
    base_url: str,
    **kwargs: Any,
) -> RunResult:
    """Synchronous `run_suite_async` (runs in a worker thread when called inside an event loop)."""
    return _run_sync(lambda: run_suite_async(suite, model, base_url, **kwargs))


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="evals-run-suite")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


async def run_suite_async(
    suite: str | Path | Suite,
    model: str,
    base_url: str,
    *,
    k_shot: int | None = None,
    out_dir: str | Path | None = None,
    run_id: str | None = None,
    limit: int | None = None,
    api_key: str | None = None,
    user: str | None = None,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    options: RunOptions | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    console: Console | None = None,
) -> RunResult:
    """Evaluate `model` served at `base_url` on `suite`.

    Results go to `out_dir/<run_id>` (resumable) when `out_dir` is given, else stay in memory.
    `k_shot` overrides the suite's few_shot.k. `user` is sent as the OpenAI `user` field and the
    `x-tuneloop-user` header (sticky A/B routing on tuneloop's endpoint). The returned run has
    `complete=False` and a `stop_reason` when the endpoint failed part-way.
    """
    options = options or RunOptions()
    loaded = load_suite(suite, check_data=False)
    data = load_suite_data(loaded, limit=limit)
    k = loaded.few_shot.k if k_shot is None else k_shot
    rid = run_id or run_id_for(loaded.name, model, k)
    folder = Path(out_dir) / rid if out_dir is not None else None
    console = console or Console(stderr=True)
    settings = request_settings(loaded)
    examples = data.eval_examples
    requests = [_request_for(data, example, k, model, settings) for example in examples]

    run = RunResult(
        run_id=rid,
        suite=loaded.name,
        task=loaded.task,
        model=model,
        base_url=base_url,
        k_shot=k,
        primary_metric=loaded.primary,
        metric_kinds={spec.name: spec.kind for spec in loaded.metric_specs()},
        higher_is_better={},
        slice_column=loaded.slice_column,
        gate={**loaded.gate.model_dump(), "metric": loaded.gate_metric},
        thresholds=dict(loaded.thresholds),
        started_at=_now(),
        planned=len(examples),
        path=str(folder) if folder else None,
    )
    judge = JudgeEndpoint(
        base_url=judge_base_url or base_url,
        model=judge_model,
        api_key=api_key,
        concurrency=options.concurrency,
        timeout_s=options.timeout_s,
    )
    metrics = _build_metrics(loaded, judge)
    previous = _previous_generations(folder, options.resume)
    results: dict[str, ExampleResult] = {}
    todo: list[_Pending] = []
    for example, (messages, fingerprint) in zip(examples, requests, strict=True):
        old = previous.get(example.id)
        if old is not None and old.fingerprint == fingerprint and old.ok:
            results[example.id] = old
        else:
            todo.append((example, messages, fingerprint))

    stop_reason = await _generate(
        todo,
        results,
        model=model,
        base_url=base_url,
        settings=settings,
        api=loaded.generation.api,
        api_key=api_key,
        user=user,
        options=options,
        transport=transport,
        folder=folder,
        console=console,
        reused=len(examples) - len(todo),
    )
    run.examples = [results[e.id] for e in examples if e.id in results]
    run.stop_reason = stop_reason
    run.complete = (
        stop_reason is None and all(r.ok for r in run.examples) and len(run.examples) == len(examples)
    )
    await _score(run, loaded, metrics, examples, judge)
    _summarise(run, loaded, options.n_resamples)
    run.finished_at = _now()
    if folder is not None:
        run.save(folder)
    return run


def request_settings(suite: Suite) -> dict[str, Any]:
    """The sampling fields every request of `suite` carries (OpenAI request body keys)."""
    gen = suite.generation
    settings: dict[str, Any] = {
        "max_tokens": gen.max_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
    }
    if gen.stop:
        settings["stop"] = list(gen.stop)
    if gen.seed is not None:
        settings["seed"] = gen.seed
    return settings


def _request_for(
    data: SuiteData, example: Example, k: int, model: str, settings: dict[str, Any]
) -> tuple[list[dict[str, str]], str]:
    messages = data.messages_for(example, k)
    blob = json.dumps(
        {"model": model, "messages": messages, "settings": settings, "api": data.suite.generation.api},
        sort_keys=True,
    )
    return messages, hashlib.sha256(blob.encode()).hexdigest()[:16]


def _previous_generations(folder: Path | None, resume: bool) -> dict[str, ExampleResult]:
    if folder is None:
        return {}
    path = folder / GENERATIONS_FILE
    if not resume:
        path.unlink(missing_ok=True)
        return {}
    if not path.is_file():
        return {}
    out: dict[str, ExampleResult] = {}
    for row in read_jsonl(path):
        result = ExampleResult.from_dict(row)
        if result.ok or result.id not in out:
            out[result.id] = result
    return out


@dataclass
class _StopRules:
    """When the runner stops asking: the endpoint is down (several examples in a row found no server) or
    it rejects everything (`RunOptions.max_rejections_before_success` rejections before any success)."""

    options: RunOptions
    base_url: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    unreachable_streak: int = 0
    rejected: int = 0
    succeeded: int = 0
    reason: str | None = None
    """Why it stopped (the first rule that fired), or None."""

    def answered(self) -> None:
        self.unreachable_streak = 0
        self.succeeded += 1

    def failed(self, exc: EndpointError) -> None:
        if exc.unreachable:
            self.unreachable_streak += 1
        elif not exc.transient:
            self.rejected += 1
        if self.unreachable_streak >= self.options.max_consecutive_unreachable:
            self._stop(f"endpoint {self.base_url} unreachable ({exc})")
        if self.succeeded == 0 and self.rejected >= self.options.max_rejections_before_success:
            self._stop(f"endpoint rejected the first {self.rejected} requests ({exc})")

    def _stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()


async def _generate(
    todo: Sequence[_Pending],
    results: dict[str, ExampleResult],
    *,
    model: str,
    base_url: str,
    settings: dict[str, Any],
    api: str,
    api_key: str | None,
    user: str | None,
    options: RunOptions,
    transport: httpx.AsyncBaseTransport | None,
    folder: Path | None,
    console: Console,
    reused: int,
) -> str | None:
    """Answer every pending example; returns why it stopped early, or None."""
    if not todo:
        return None
    queue: asyncio.Queue[_Pending] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)
    rules = _StopRules(options, base_url)
    log = _open_generations_log(folder)
    progress = _progress_bar(console, options.progress)
    task_id = progress.add_task(f"{model}", total=len(todo) + reused, completed=reused, status="")

    async with ChatEndpoint(
        base_url, api_key=api_key, timeout_s=options.timeout_s, retry=options.retry, transport=transport
    ) as client:

        def ask(messages: list[dict[str, str]]) -> Awaitable[Completion]:
            return client.complete(model, messages, settings, api=api, user=user)

        async def worker() -> None:
            while not rules.stop.is_set():
                try:
                    pending = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await _answer(ask, pending, rules)
                results[result.id] = result
                if log is not None:
                    log.write(dumps_json(result.to_dict()) + "\n")
                    log.flush()
                failed = sum(1 for r in results.values() if not r.ok)
                progress.update(task_id, advance=1, status=f"[red]{failed} failed" if failed else "")

        try:
            with progress:
                await asyncio.gather(*(worker() for _ in range(max(1, options.concurrency))))
        finally:
            if log is not None:
                log.close()
    return rules.reason


async def _answer(
    ask: Callable[[list[dict[str, str]]], Awaitable[Completion]], pending: _Pending, rules: _StopRules
) -> ExampleResult:
    """One example's result: the endpoint's answer, or the error it ended in (counted by `rules`)."""
    example, messages, fingerprint = pending
    result = ExampleResult(
        id=example.id,
        slice=example.slice,
        prompt=messages[-1]["content"],
        reference=example.reference,
        fingerprint=fingerprint,
    )
    try:
        completion = await ask(messages)
    except EndpointError as exc:
        result.error = str(exc)
        rules.failed(exc)
    else:
        _fill(result, completion)
        rules.answered()
    return result


def _open_generations_log(folder: Path | None) -> TextIO | None:
    """`generations.jsonl` of the run folder opened for appending (None without a folder)."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / GENERATIONS_FILE).open("a", encoding="utf-8")


def _progress_bar(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def _fill(result: ExampleResult, completion: Completion) -> None:
    result.output = completion.text
    result.served_by = completion.served_by
    result.model = completion.model
    result.latency_ms = completion.latency_ms
    result.prompt_tokens = completion.prompt_tokens
    result.completion_tokens = completion.completion_tokens
    result.finish_reason = completion.finish_reason
    result.attempts = completion.attempts


def _build_metrics(suite: Suite, judge: JudgeEndpoint) -> list[Metric]:
    """Instantiate the suite's metrics before any request, so a misconfigured one fails first."""
    metrics = [build_metric(spec.name, spec.kind, spec.args) for spec in suite.metric_specs()]
    for metric in metrics:
        if isinstance(metric, LlmJudge):
            metric.judge_endpoint(MetricInput(predictions=[], examples=[], prompts=[], judge=judge))
    return metrics


async def _score(
    run: RunResult, suite: Suite, metrics: Sequence[Metric], examples: Sequence[Example], judge: JudgeEndpoint
) -> None:
    task = get_task(suite.task)
    by_id = {e.id: e for e in examples}
    answered = [r for r in run.examples if r.ok]
    for result in answered:
        result.prediction = task.extract(result.output or "", suite.labels)
    for metric in metrics:
        run.higher_is_better[metric.name] = metric.higher_is_better
        if not answered:
            continue
        inputs = MetricInput(
            predictions=[r.prediction or "" for r in answered],
            examples=[by_id[r.id] for r in answered],
            prompts=[r.prompt for r in answered],
            labels=suite.labels,
            judge=judge,
        )
        scores = await metric.score(inputs)
        for i, result in enumerate(answered):
            detail = scores.details[i] if i < len(scores.details) else None
            result.metrics[metric.name] = MetricValue(
                score=scores.per_example[i], stats=[float(x) for x in scores.stats[i]], detail=detail
            )


def _summarise(run: RunResult, suite: Suite, n_resamples: int) -> None:
    from evals.metrics import get_metric_class

    groups: list[str | None] = [None, *run.slices()]
    for name, kind in run.metric_kinds.items():
        statistic = get_metric_class(kind).statistic
        per: dict[str, MetricSummary] = {}
        for group in groups:
            ids = run.scored_ids(name, group)
            if not ids:
                continue
            interval = bootstrap_interval(
                run.metric_rows(name, ids), statistic, n_resamples=n_resamples, seed=0
            )
            per[RunResult.ALL if group is None else group] = MetricSummary(
                interval.estimate, interval.low, interval.high, interval.n
            )
        run.summaries[name] = per
    for name, threshold in suite.thresholds.items():
        overall = run.summaries.get(name, {}).get(RunResult.ALL)
        value = overall.value if overall else float("nan")
        higher = run.higher_is_better.get(name, True)
        passed = bool(value >= threshold) if higher else bool(value <= threshold)
        run.threshold_results[name] = {"threshold": threshold, "value": value, "passed": passed}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
