"""LLM-as-judge scorer: a model behind any OpenAI-compatible endpoint grades a sampled fraction of answers.

Sampling is deterministic per request id (a hash below `sample_rate`), so re-running a batch asks the
judge about the same requests and never double-samples. The judge replies with reasoning and a final
"Score: N" line (1..scale_max), normalised to 0..1. A failed call or an unparsable reply raises
`ScorerError` for that request (it stays unscored and is retried by a later batch); it is never scored 0.
The grading prompt is evals' (`evals.prompts.judge_messages`, shared with the `llm_judge` eval metric);
this module owns the support-desk default rubric, sampling and the strict "Score: N" parsing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from evals.prompts import judge_messages
from monitoring.errors import ScorerError
from monitoring.scorers.base import Scorer, ScoreResult, ScorerItem, register_scorer
from monitoring.store import FeedbackEntry, LoggedRequest

__all__ = ["DEFAULT_RUBRIC", "LlmJudgeScorer", "parse_judge_score", "sampled"]

DEFAULT_RUBRIC = (
    "Score how well the answer serves a customer of a support desk: correct and consistent with the "
    "reference and policy (if given), helpful, on-topic, concise and polite. 5 = excellent, "
    "3 = partly right or partly off-topic, 1 = wrong, unhelpful, off-topic or empty."
)

_SCORE_LINE = re.compile(r"score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def sampled(request_id: str, rate: float, salt: str = "") -> bool:
    """Deterministic Bernoulli(rate) draw keyed by the request id."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(f"{salt}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def parse_judge_score(text: str, scale_max: int) -> float:
    """The judge's final "Score: N" as 0..1; raises ScorerError when there is none in range."""
    matches = _SCORE_LINE.findall(text or "")
    if not matches:
        raise ScorerError(f"judge reply has no 'Score: N' line: {text[:200]!r}")
    value = float(matches[-1])
    if not 1.0 <= value <= scale_max:
        raise ScorerError(f"judge score {value} is outside 1..{scale_max}")
    return (value - 1.0) / (scale_max - 1.0)


@register_scorer("llm_judge")
class LlmJudgeScorer(Scorer):
    """Rubric grade from a judge model on a sampled fraction of requests."""

    description = "LLM-as-judge with a rubric (sampled)"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        name: str | None = None,
        api_key: str | None = None,
        rubric: str = DEFAULT_RUBRIC,
        sample_rate: float = 0.1,
        scale_max: int = 5,
        max_tokens: int = 128,
        timeout_s: float = 60.0,
        concurrency: int = 4,
        reference_tag: str = "reference",
        salt: str = "",
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(name=name)
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in 0..1, got {sample_rate}")
        if scale_max < 2:
            raise ValueError("scale_max must be at least 2")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.rubric = rubric
        self.sample_rate = sample_rate
        self.scale_max = scale_max
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.reference_tag = reference_tag
        self.salt = salt
        self._client = client

    def messages(self, request: LoggedRequest) -> list[dict[str, str]]:
        """The chat messages sent to the judge for one request."""
        reference = request.tags.get(self.reference_tag)
        return judge_messages(
            rubric=self.rubric,
            prompt=request.user_text,
            reference=reference if isinstance(reference, str) else "",
            answer=request.response or "",
            scale_max=self.scale_max,
        )

    def _ask(self, client: httpx.Client, request: LoggedRequest) -> ScoreResult:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(request),
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        try:
            reply = client.post(
                f"{self.base_url}/chat/completions", json=body, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            raise ScorerError(f"judge endpoint {self.base_url} failed: {type(exc).__name__}: {exc}") from exc
        if reply.status_code != 200:
            raise ScorerError(
                f"judge endpoint {self.base_url} answered HTTP {reply.status_code}: {reply.text[:200]}"
            )
        try:
            content = reply.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ScorerError(f"judge reply is not a chat completion: {reply.text[:200]!r}") from exc
        value = parse_judge_score(content, self.scale_max)
        return ScoreResult(
            value, {"judge_model": self.model, "reply": content[-500:], "scale_max": self.scale_max}
        )

    def score(self, request: LoggedRequest, feedback: Sequence[FeedbackEntry]) -> ScoreResult | None:
        result = self.score_many([(request, feedback)])[0]
        if isinstance(result, ScorerError):
            raise result
        return result

    def score_many(self, items: Sequence[ScorerItem]) -> list[ScoreResult | None | ScorerError]:
        out: list[ScoreResult | None | ScorerError] = [None] * len(items)
        todo: list[int] = []
        for i, (request, _) in enumerate(items):
            if not sampled(request.id, self.sample_rate, self.salt):
                continue
            if not (request.response or "").strip():
                out[i] = ScoreResult(0.0, {"judge_model": self.model, "reply": "empty answer, not sent"})
                continue
            todo.append(i)
        if not todo:
            return out
        client = self._client or httpx.Client()
        try:

            def run(i: int) -> ScoreResult | ScorerError:
                try:
                    return self._ask(client, items[i][0])
                except ScorerError as exc:
                    return exc

            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                for i, result in zip(todo, pool.map(run, todo), strict=True):
                    out[i] = result
        finally:
            if self._client is None:
                client.close()
        return out
