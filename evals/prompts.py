"""Prompt templates and chat message building (zero-shot and k-shot), and the LLM-judge prompt.

A template is Jinja2 (sandboxed, strict: an undefined name is an error) or `str.format`. Before a run, the
suite checks that every field a template references is a column of its dataset, so a typo fails at load
time with the field's name instead of after a hundred requests.

`judge_messages` is the one grading prompt of an LLM judge (system text + rubric/request/reference/answer,
ending in a "Score: N" line), used by the `llm_judge` eval metric and by monitoring's `llm_judge` scorer;
each brings its own default rubric.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from evals.errors import SuiteError

TemplateEngine = Literal["jinja", "format"]
Message = dict[str, str]

_JINJA = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


@dataclass(frozen=True)
class PromptTemplate:
    """One template string and the engine that renders it."""

    source: str
    engine: TemplateEngine = "jinja"

    def fields(self) -> set[str]:
        """Top-level names the template reads from an example's fields."""
        if self.engine == "jinja":
            try:
                parsed = _JINJA.parse(self.source)
            except jinja2.TemplateSyntaxError as exc:
                raise SuiteError(
                    f"prompt template has a Jinja syntax error on line {exc.lineno}: {exc.message}"
                ) from exc
            return set(meta.find_undeclared_variables(parsed))
        names: set[str] = set()
        try:
            for _, field_name, _, _ in string.Formatter().parse(self.source):
                if field_name is None:
                    continue
                if field_name == "" or field_name.isdigit():
                    raise SuiteError(
                        "str.format templates must use named fields like {question}, not {} or {0}"
                    )
                names.add(field_name.split(".")[0].split("[")[0])
        except ValueError as exc:
            raise SuiteError(f"prompt template is not a valid str.format string: {exc}") from exc
        return names

    def render(self, values: Mapping[str, Any]) -> str:
        """Fill the template; a missing value is an error naming the field."""
        if self.engine == "jinja":
            try:
                return _JINJA.from_string(self.source).render(**values)
            except jinja2.UndefinedError as exc:
                raise SuiteError(f"prompt template: {exc.message}") from exc
        try:
            return self.source.format(**values)
        except KeyError as exc:
            raise SuiteError(
                f"prompt template references field {exc.args[0]!r} that the example lacks"
            ) from exc

    def check_fields(self, columns: Sequence[str], *, where: str) -> None:
        """Raise if the template references a field that is not one of `columns`."""
        missing = sorted(self.fields() - set(columns))
        if missing:
            raise SuiteError(
                f"{where} references field {missing[0]!r}, which is not a column of the dataset "
                f"(columns: {', '.join(columns)})"
            )


@dataclass(frozen=True)
class ChatPrompt:
    """How an example becomes messages: optional system text, the user turn, and the few-shot answer."""

    user: PromptTemplate
    system: PromptTemplate | None = None
    answer: PromptTemplate | None = None

    def messages(
        self, fields: Mapping[str, Any], shots: Sequence[tuple[Mapping[str, Any], str]] = ()
    ) -> list[Message]:
        """Chat messages for one example, with each shot as a prior user/assistant exchange."""
        out: list[Message] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system.render(fields)})
        for shot_fields, shot_answer in shots:
            out.append({"role": "user", "content": self.user.render(shot_fields)})
            out.append({"role": "assistant", "content": shot_answer})
        out.append({"role": "user", "content": self.user.render(fields)})
        return out


def messages_to_text(messages: Sequence[Message]) -> str:
    """Flatten chat messages into one plain prompt for the legacy completions endpoint."""
    parts: list[str] = []
    for message in messages:
        role = message["role"]
        label = {"system": "", "user": "User: ", "assistant": "Assistant: "}.get(role, f"{role}: ")
        parts.append(f"{label}{message['content']}")
    parts.append("Assistant:")
    return "\n\n".join(parts)


def choose_shots(pool_size: int, k: int, *, seed: int, example_key: str) -> list[int]:
    """Indices of `k` training examples for one eval example, stable across runs and machines.

    Seeding per example (not one draw for the whole run) keeps an example's prompt the same even when
    a resumed run evaluates examples in another order.
    """
    if k <= 0:
        return []
    if k > pool_size:
        raise SuiteError(f"few_shot.k={k} but the train split has only {pool_size} examples")
    rng = random.Random(f"{seed}:{example_key}")
    return rng.sample(range(pool_size), k)


JUDGE_SYSTEM = "You are a strict, fair grader of assistant answers. Follow the rubric exactly."

JUDGE_TEMPLATE = """Rubric:
{rubric}

Request:
{prompt}

Reference answer (may be empty):
{reference}

Answer to grade:
{answer}

Reply with one short sentence of reasoning, then a final line exactly like "Score: N" where N is an integer \
from 1 (worst) to {scale_max} (best)."""


def judge_messages(rubric: str, prompt: str, reference: str, answer: str, scale_max: int) -> list[Message]:
    """The chat messages that ask a judge model to grade `answer` to `prompt` on a 1..`scale_max` rubric."""
    text = JUDGE_TEMPLATE.format(
        rubric=rubric, prompt=prompt, reference=reference, answer=answer, scale_max=scale_max
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]
