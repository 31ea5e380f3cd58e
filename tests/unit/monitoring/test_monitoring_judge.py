"""The LLM-as-judge scorer against a fake OpenAI-compatible endpoint (httpx.MockTransport)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import httpx
import pytest

from monitoring.errors import ScorerError
from monitoring.scorers import LlmJudgeScorer, ScorerItem, build_scorer
from monitoring.scorers.judge import parse_judge_score, sampled
from monitoring.store import LoggedRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def req(
    rid: str, response: str | None = "Refunds take 5 days.", reference: str | None = None
) -> LoggedRequest:
    tags = {"reference": reference} if reference else {}
    return LoggedRequest(
        id=rid,
        created_at=T0,
        endpoint="chat.completions",
        served_name="b",
        served_version=None,
        prompt=json.dumps([{"role": "user", "content": f"question {rid}"}]),
        response=response,
        tags=tags,
    )


class FakeJudge:
    """Answers every chat completion with a fixed reply and records the requests."""

    def __init__(self, reply: str = "Accurate and polite.\nScore: 4", status: int = 200) -> None:
        self.reply = reply
        self.status = status
        self.bodies: list[dict[str, object]] = []
        self.headers: list[httpx.Headers] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.bodies.append(json.loads(request.content))
            self.headers.append(request.headers)
        assert request.url.path == "/v1/chat/completions"
        if self.status != 200:
            return httpx.Response(self.status, text="overloaded")
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": self.reply}}]}
        )


def judge(fake: FakeJudge, **kw: object) -> LlmJudgeScorer:
    client = httpx.Client(transport=httpx.MockTransport(fake))
    return LlmJudgeScorer(base_url="http://judge.local/v1/", model="grader", client=client, **kw)  # type: ignore[arg-type]


def test_parse_judge_score() -> None:
    assert parse_judge_score("fine\nScore: 5", 5) == 1.0
    assert parse_judge_score("Score: 2 at first... final Score: 3", 5) == 0.5
    assert parse_judge_score("**Score:** 1", 5) == 0.0
    with pytest.raises(ScorerError, match="no 'Score: N'"):
        parse_judge_score("I think it is good", 5)
    with pytest.raises(ScorerError, match="outside 1..5"):
        parse_judge_score("Score: 9", 5)


def test_sampling_is_deterministic_and_near_rate() -> None:
    picks = [sampled(f"chatcmpl-{i}", 0.2) for i in range(2000)]
    assert picks == [sampled(f"chatcmpl-{i}", 0.2) for i in range(2000)]
    assert 0.16 < sum(picks) / len(picks) < 0.24
    assert sampled("x", 1.0) and not sampled("x", 0.0)


def test_judge_scores_sampled_requests_with_rubric_and_reference() -> None:
    fake = FakeJudge()
    scorer = judge(fake, sample_rate=1.0, api_key="sk-test", rubric="Be strict about refunds.")
    items: list[ScorerItem] = [(req("a", reference="5 days"), []), (req("b"), [])]
    results = scorer.score_many(items)
    assert [r.score for r in results] == [0.75, 0.75]  # type: ignore[union-attr]
    assert len(fake.bodies) == 2
    body = fake.bodies[0]
    assert body["model"] == "grader" and body["temperature"] == 0.0
    text = json.dumps(body["messages"])
    assert "Be strict about refunds." in text and "Refunds take 5 days." in text
    assert any("5 days" in json.dumps(b["messages"]) for b in fake.bodies)
    assert fake.headers[0]["authorization"] == "Bearer sk-test"


def test_judge_skips_unsampled_and_scores_empty_without_calling() -> None:
    fake = FakeJudge()
    scorer = judge(fake, sample_rate=0.0)
    assert scorer.score_many([(req("a"), [])]) == [None]
    scorer = judge(fake, sample_rate=1.0)
    result = scorer.score_many([(req("a", response="  "), [])])[0]
    assert result is not None and not isinstance(result, ScorerError) and result.score == 0.0
    assert fake.bodies == []


def test_judge_failures_are_returned_not_scored() -> None:
    results = judge(FakeJudge(status=503), sample_rate=1.0).score_many([(req("a"), [])])
    assert isinstance(results[0], ScorerError) and "HTTP 503" in str(results[0])
    results = judge(FakeJudge(reply="looks fine to me"), sample_rate=1.0).score_many([(req("a"), [])])
    assert isinstance(results[0], ScorerError)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    scorer = LlmJudgeScorer(
        base_url="http://judge.local/v1",
        model="m",
        sample_rate=1.0,
        client=httpx.Client(transport=httpx.MockTransport(refuse)),
    )
    with pytest.raises(ScorerError, match="ConnectError"):
        scorer.score(req("a"), [])


def test_judge_config_validation() -> None:
    with pytest.raises(Exception, match="sample_rate"):
        build_scorer({"kind": "llm_judge", "base_url": "http://x", "model": "m", "sample_rate": 2})
    with pytest.raises(Exception, match="unknown option"):
        build_scorer({"kind": "llm_judge", "base_url": "http://x", "model": "m", "temprature": 0})


def test_scorer_and_eval_metric_send_the_same_judge_prompt() -> None:
    """One grading prompt (evals.prompts.judge_messages): monitoring's scorer and the eval metric agree."""
    from evals.metrics import build_metric
    from evals.metrics.judge import LlmJudge
    from evals.prompts import JUDGE_SYSTEM, judge_messages

    scorer = judge(FakeJudge(), rubric="R", scale_max=7)
    messages = scorer.messages(req("a", response="Five days.", reference="5 days"))
    assert messages == judge_messages("R", "question a", "5 days", "Five days.", 7)
    assert messages[0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert "Score: N" in messages[1]["content"] and "from 1 (worst) to 7 (best)" in messages[1]["content"]
    metric = build_metric("llm_judge", args={"rubric": "R", "scale_max": 7})
    assert isinstance(metric, LlmJudge)
    assert metric.judge_prompt("question a", "5 days", "Five days.") == messages
