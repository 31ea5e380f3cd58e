"""LLM-as-judge metric: any served model grades answers against a rubric, over the OpenAI-compatible API.

The judge model and endpoint come from the metric's args (`judge_model`, `judge_base_url`) or from the
run (`run_suite(..., judge_model=...)`, defaulting to the run's endpoint). Replies are parsed by the
shipped `llm_judge` evaluate module; an unparsable reply or a failed judge call leaves that example
unscored (recorded in details) rather than scoring it 0. The grading prompt is `evals.prompts.judge_messages`
(shared with monitoring's `llm_judge` scorer); this module owns the eval default rubric.
"""

from __future__ import annotations

import asyncio
from typing import Any

from evals.client import ChatEndpoint
from evals.errors import EndpointError, MetricError
from evals.metrics.base import (
    JudgeEndpoint,
    Metric,
    MetricInput,
    MetricScores,
    compute_module,
    mean_rows,
    module_lock,
    register_metric,
)
from evals.prompts import judge_messages

DEFAULT_RUBRIC = (
    "Score how well the answer serves the user: correct and consistent with the reference (if one is given), "
    "helpful, on-topic, and in the requested style. 5 = excellent, 3 = partly right or partly off-style, "
    "1 = wrong, off-topic or empty."
)


@register_metric("llm_judge")
class LlmJudge(Metric):
    """A judge model's rubric score, normalised to [0, 1]."""

    module = "llm_judge"
    allowed_args = frozenset(
        {"rubric", "judge_model", "judge_base_url", "scale_max", "max_tokens", "concurrency", "api_key"}
    )

    def judge_endpoint(self, inputs: MetricInput) -> JudgeEndpoint:
        base = inputs.judge
        model = self.args.get("judge_model") or (base.model if base else None)
        base_url = self.args.get("judge_base_url") or (base.base_url if base else None)
        if not model or not base_url:
            raise MetricError(
                f"metric {self.name!r} (llm_judge) needs a judge: set args.judge_model in the suite or pass "
                "--judge-model / run_suite(judge_model=...)"
            )
        return JudgeEndpoint(
            base_url=str(base_url),
            model=str(model),
            api_key=self.args.get("api_key") or (base.api_key if base else None),
            concurrency=int(self.args.get("concurrency", base.concurrency if base else 4)),
            timeout_s=base.timeout_s if base else 60.0,
        )

    def judge_prompt(self, prompt: str, reference: str | None, answer: str) -> list[dict[str, str]]:
        return judge_messages(
            rubric=self.args.get("rubric", DEFAULT_RUBRIC),
            prompt=prompt,
            reference=reference or "",
            answer=answer,
            scale_max=int(self.args.get("scale_max", 5)),
        )

    async def score(self, inputs: MetricInput) -> MetricScores:
        endpoint = self.judge_endpoint(inputs)
        settings = {"max_tokens": int(self.args.get("max_tokens", 96)), "temperature": 0.0, "seed": 0}
        limit = asyncio.Semaphore(max(1, endpoint.concurrency))
        replies: list[str] = [""] * len(inputs.predictions)
        failures: dict[int, str] = {}
        assert endpoint.model is not None
        async with ChatEndpoint(
            endpoint.base_url, api_key=endpoint.api_key, timeout_s=endpoint.timeout_s
        ) as client:

            async def judge_one(index: int) -> None:
                example = inputs.examples[index]
                messages = self.judge_prompt(
                    inputs.prompts[index], example.reference, inputs.predictions[index]
                )
                async with limit:
                    try:
                        completion = await client.complete(str(endpoint.model), messages, settings)
                    except EndpointError as exc:
                        failures[index] = str(exc)
                        return
                replies[index] = completion.text

            await asyncio.gather(*(judge_one(i) for i in range(len(inputs.predictions))))
        out = await asyncio.to_thread(self._parse, replies, int(self.args.get("scale_max", 5)))
        scores: list[float | None] = [None if i in failures else s for i, s in enumerate(out["scores"])]
        details: list[dict[str, Any]] = [
            {
                "judge_reply": replies[i][:500],
                "judge_model": endpoint.model,
                **({"judge_error": failures[i]} if i in failures else {}),
            }
            for i in range(len(replies))
        ]
        stats = mean_rows(scores)
        return MetricScores(scores, stats, self.value_of(stats), details)

    def _parse(self, replies: list[str], scale_max: int) -> dict[str, Any]:
        with module_lock(self.module):
            return compute_module(
                self.module, predictions=replies, references=[""] * len(replies), scale_max=scale_max
            )
