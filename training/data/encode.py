"""Tokenize examples into `input_ids` + `labels` (-100 where no loss is taken).

* chat: rendered with the base model's chat template; labels cover every assistant turn including its
  end-of-turn token (assistant-only loss), found by rendering each turn's prefix and mapping character
  spans to tokens through the tokenizer's offsets, so it works with any template. Tool-calling
  conversations are given to the template as serving gives them (`training.data.tools`: the definitions
  when the template renders them, tool calls as the template renders them or as JSON text, a forced tool
  choice's answer as the JSON its grammar produces); tool results are prompt, not target;
* completion: prompt + completion + EOS, labels on the completion and EOS;
* text: text + EOS cut into chunks of max_seq_length tokens, labels everywhere (domain adaptation).

Rows longer than max_seq_length are dropped (`too_long`) or truncated (`overlong: truncate`).

Preference examples (styles dpo / kto) are not tokenized here: TRL's trainers tokenize them with the same
chat template in the worker. `encode_preference` measures them (the data card's lengths, the length limit)
and returns the rows TRL reads: conversational (prompt turns, answers as one assistant message) for chat
prompts, plain strings otherwise; for kto a preference pair becomes a desirable and an undesirable row.
Preference records from tool traffic are rendered by the same rule as SFT (`training.data.tools`): the
prompt with the definitions where serving shows them (TRL's `tools` column), answers that are tool calls as
the grammar's JSON for a forced tool choice, else as the template renders them (or as JSON text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from training.data.example import Example, RowRejected, tool_calls_text
from training.data.tools import chat_for_template

__all__ = ["Encoded", "PreferenceRow", "encode_example", "encode_preference", "render_chat"]

IGNORE = -100


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trainable_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True, slots=True)
class PreferenceRow:
    """One row for TRL's DPOTrainer (prompt, chosen, rejected) or KTOTrainer (prompt, completion, label)."""

    record: dict[str, Any]
    length: int
    """Tokens of the prompt plus its longest answer."""
    trainable_tokens: int
    """Answer tokens (what the preference loss scores)."""
    conversational: bool


def render_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    extra = {"tools": tools} if tools else {}
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )
    )


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _tokenize_with_spans(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> Encoded:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for i, (start, end) in enumerate(enc["offset_mapping"]):
        if end <= start:
            continue
        if any(s <= start < e for s, e in spans):
            labels[i] = ids[i]
    return Encoded(ids, labels)


def _chat(example: Example, tokenizer: Any) -> Encoded:
    messages, tools = chat_for_template(example.messages, example.tools, example.tool_choice, tokenizer)
    full = render_chat(tokenizer, messages, tools=tools)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True, tools=tools) if i else ""
        upto = render_chat(tokenizer, messages[: i + 1], tools=tools)
        start = _common_prefix(full, before)
        end = _common_prefix(full, upto)
        if end > start:
            spans.append((start, end))
    return _tokenize_with_spans(tokenizer, full, spans)


def _completion(example: Example, tokenizer: Any) -> Encoded:
    eos = tokenizer.eos_token or ""
    text = example.prompt + example.completion + eos
    return _tokenize_with_spans(tokenizer, text, [(len(example.prompt), len(text))])


def encode_example(example: Example, tokenizer: Any, max_len: int, overlong: str = "drop") -> list[Encoded]:
    """Encode one example (text may yield several chunks). Raises RowRejected('too_long' |
    'no_target_tokens')."""
    if example.kind == "text":
        ids = list(tokenizer(example.text, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(int(tokenizer.eos_token_id))
        chunks = [ids[i : i + max_len] for i in range(0, len(ids), max_len)]
        out = [Encoded(c, list(c)) for c in chunks if len(c) >= 2]
        if not out:
            raise RowRejected("no_target_tokens", "text shorter than two tokens")
        return out
    encoded = _chat(example, tokenizer) if example.kind == "chat" else _completion(example, tokenizer)
    if len(encoded.input_ids) > max_len:
        if overlong == "drop":
            raise RowRejected("too_long", f"{len(encoded.input_ids)} tokens > max_seq_length {max_len}")
        encoded = Encoded(encoded.input_ids[:max_len], encoded.labels[:max_len])
    if encoded.trainable_tokens == 0:
        raise RowRejected("no_target_tokens", "no tokens left to compute the loss on")
    return [encoded]


_PROBE = "\u2063tuneloop-answer\u2063"
"""Content no template produces, to find where a template puts an assistant message's content."""


def _as_content(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tokenizer: Any, *, generation: bool
) -> list[dict[str, Any]]:
    """`messages` as `chat_for_template` gives them, each reduced to role and content: an assistant message
    whose tool calls the template renders itself gets, as its content, exactly the text the template makes of
    those calls (found by rendering the message once with its calls and once with a probe as content).

    Why: TRL's rows are Arrow columns, which hold one struct type for every row, so structured tool calls of
    different functions would come back unified - argument keys a call lacks filled with null, rendered by
    the template as `"to": null`. Text comes back unchanged. The result must render exactly as the messages
    do (what serving renders); RowRejected('tool_calls_unsupported') for a template where it cannot."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not message.get("tool_calls"):
            out.append({"role": message["role"], "content": message["content"]})
            continue
        with_calls = render_chat(tokenizer, messages[: i + 1], tools=tools)
        probe = render_chat(tokenizer, [*messages[:i], {"role": "assistant", "content": _PROBE}], tools=tools)
        before, found, after = probe.partition(_PROBE)
        if not found or not (with_calls.startswith(before) and with_calls.endswith(after)):
            raise RowRejected(
                "tool_calls_unsupported", "the chat template's tool calls cannot be written as text"
            )
        out.append({"role": "assistant", "content": with_calls[len(before) : len(with_calls) - len(after)]})
    if any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        served = render_chat(tokenizer, messages, add_generation_prompt=generation, tools=tools)
        if render_chat(tokenizer, out, add_generation_prompt=generation, tools=tools) != served:
            raise RowRejected(
                "tool_calls_unsupported", "the chat template renders this conversation differently as text"
            )
    return out


def _chat_prompt(
    example: Example, tokenizer: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """A preference example's chat prompt as TRL gets it, and the tools its template is given: rendered by
    the one rule of `training.data.tools` (definitions only where serving shows them; earlier tool calls
    as the template renders them, or as JSON text)."""
    turns, tools = chat_for_template(
        example.messages, example.tools, example.tool_choice, tokenizer, answer=False
    )
    return _as_content(turns, tools, tokenizer, generation=True), tools


def _chat_answer(example: Example, text: str, calls: tuple[dict[str, Any], ...], tokenizer: Any) -> str:
    """An answer's content as TRL gets it, by the same rule as an SFT answer: a forced tool choice's calls
    as the grammar's JSON, other calls as the template renders them (or as JSON text)."""
    answer: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        answer["tool_calls"] = [dict(c) for c in calls]
    turns, tools = chat_for_template(
        [*example.messages, answer], example.tools, example.tool_choice, tokenizer
    )
    return str(_as_content(turns, tools, tokenizer, generation=False)[-1]["content"])


def _measure(
    prompt: list[dict[str, Any]] | str, tokenizer: Any, answer: str, tools: list[dict[str, Any]] | None
) -> tuple[int, int]:
    """(prompt tokens, prompt + answer tokens) as TRL will tokenize them."""
    if isinstance(prompt, list):
        before = render_chat(tokenizer, prompt, add_generation_prompt=True, tools=tools)
        full = render_chat(tokenizer, [*prompt, {"role": "assistant", "content": answer}], tools=tools)
    else:
        before = prompt
        full = prompt + answer + (tokenizer.eos_token or "")
    n_prompt = len(tokenizer(before, add_special_tokens=False)["input_ids"])
    return n_prompt, len(tokenizer(full, add_special_tokens=False)["input_ids"])


def encode_preference(
    example: Example, tokenizer: Any, max_len: int, style: str, overlong: str = "drop"
) -> list[PreferenceRow]:
    """The TRL rows of a preference / kto example (kto: a pair becomes two rows). Raises
    RowRejected('too_long') when the prompt fills max_len, or (overlong: drop) when prompt + answer exceeds
    it; with truncate TRL keeps the start of longer rows."""
    conversational = bool(example.messages)

    def answer(text: str) -> Any:
        return [{"role": "assistant", "content": text}] if conversational else text

    prompt: list[dict[str, Any]] | str
    tools: list[dict[str, Any]] | None = None
    if conversational:
        prompt, tools = _chat_prompt(example, tokenizer)
        answers = [_chat_answer(example, text, calls, tokenizer) for text, calls in example.answers()]
    else:  # a plain-text prompt: tool calls as JSON text (rule 2)
        prompt = example.prompt
        answers = [text + tool_calls_text(calls) if calls else text for text, calls in example.answers()]
    # TRL gives a row's `tools` column to the chat template for the prompt and prompt + answer; it is set only
    # where serving shows the definitions (rule 1 of `training.data.tools`), as JSON text (TRL parses it):
    # an Arrow column would unify the parameters of different tools, filling those a tool lacks with null.
    extra = {"tools": json.dumps(tools, ensure_ascii=False)} if tools else {}
    measured = [_measure(prompt, tokenizer, a, tools) for a in answers]
    n_prompt = measured[0][0]
    longest = max(full for _, full in measured)
    if n_prompt >= max_len or (overlong == "drop" and longest > max_len):
        raise RowRejected("too_long", f"{longest} tokens (prompt {n_prompt}) > max_seq_length {max_len}")
    if example.kind == "preference" and style == "dpo":
        record = {"prompt": prompt, "chosen": answer(answers[0]), "rejected": answer(answers[1]), **extra}
        trainable = sum(min(full, max_len) - n_prompt for _, full in measured)
        return [PreferenceRow(record, min(longest, max_len), trainable, conversational)]
    labels = [True, False] if example.kind == "preference" else [bool(example.label)]
    return [
        PreferenceRow(
            {"prompt": prompt, "completion": answer(text), "label": label, **extra},
            min(full, max_len),
            min(full, max_len) - n_prompt,
            conversational,
        )
        for text, label, (_, full) in zip(answers, labels, measured, strict=True)
    ]
