"""Encoding tool-calling records with the real SmolLM2 tokenizer (a template without tools) and with a
template that renders tools: the prompt is the one serving renders, labels cover the assistant answer(s)
only, in the format serving's tool-call path produces and parses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tool_records import TOOLS  # type: ignore[import-not-found]
from tool_records import served_prompt as render_served

from training.data.encode import encode_example, encode_preference
from training.data.example import Example, RowRejected

IGNORE = -100
NAMED = {"type": "function", "function": {"name": "get_weather"}}
PARIS = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
PROMPT = (
    {"role": "user", "content": "Weather in Paris, then mail it to ops?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", **PARIS}]},
    {"role": "tool", "content": '{"sky": "clear"}', "tool_call_id": "call_1"},
)
MAIL = {"type": "function", "function": {"name": "send_email", "arguments": {"to": "ops", "body": "sunny"}}}


def record(choice: Any, answer: dict[str, Any]) -> Example:
    return Example(
        kind="chat", source="s", messages=(*PROMPT, answer), tools=tuple(TOOLS), tool_choice=choice
    )


def split(tokenizer: Any, example: Example) -> tuple[str, str]:
    """(the whole encoded text, the text of the labelled tokens)."""
    (enc,) = encode_example(example, tokenizer, 512)
    labelled = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE]
    return tokenizer.decode(enc.input_ids), tokenizer.decode(labelled)


def served_prompt(tokenizer: Any, example: Example) -> str:
    """The prompt serving renders for the example's request."""
    return render_served(tokenizer, PROMPT, example.tools, example.tool_choice)


@pytest.mark.parametrize(
    ("choice", "answer"),
    [
        ("required", '[{"name": "send_email", "parameters": {"to": "ops", "body": "sunny"}}]'),
        (NAMED, '{"to": "ops", "body": "sunny"}'),
        ("auto", '[{"name": "send_email", "arguments": {"to": "ops", "body": "sunny"}}]'),
    ],
)
def test_smollm2_trains_on_the_served_prompt_and_the_parsed_format(
    tokenizer: Any, choice: Any, answer: str
) -> None:
    """SmolLM2's template renders no tools: serving's prompt has no definitions (a forced choice's grammar
    constrains the answer); the labels are exactly the answer serving parses, plus the end of turn."""
    example = record(choice, {"role": "assistant", "content": "", "tool_calls": [MAIL]})
    text, labelled = split(tokenizer, example)
    prompt = served_prompt(tokenizer, example)
    assert text == prompt + answer + "<|im_end|>\n"
    # the earlier call (history) is a labelled assistant turn too, as serving writes it into the prompt
    history = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|im_end|>\n'
    assert labelled == history + answer + "<|im_end|>\n"
    assert "clear" not in labelled and "Weather in Paris" not in labelled  # tool result, user: prompt only
    assert "send_email" not in prompt and "Current weather" not in text  # no definitions: as served


def test_a_template_with_tools_gets_the_definitions_and_renders_the_calls(hermes_tokenizer: Any) -> None:
    example = record("auto", {"role": "assistant", "content": "", "tool_calls": [MAIL]})
    text, labelled = split(hermes_tokenizer, example)
    prompt = served_prompt(hermes_tokenizer, example)
    assert text.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")
    for tool in TOOLS:  # the definitions, as the template renders them
        assert json.dumps(tool, ensure_ascii=False) in prompt
    answer = '<tool_call>\n{"name": "send_email", "arguments": {"to": "ops", "body": "sunny"}}\n</tool_call>'
    assert text == prompt + answer + "<|im_end|>\n"
    assert answer in labelled and "get_weather" in labelled  # both assistant turns
    assert (
        "Current weather" not in labelled
        and "<tool_response>" not in labelled
        and "Weather in" not in labelled
    )
    # a forced choice: definitions in the prompt, the answer is the grammar's JSON, not <tool_call>
    text, labelled = split(
        hermes_tokenizer, record("required", {"role": "assistant", "content": "", "tool_calls": [MAIL]})
    )
    assert labelled.endswith(
        '[{"name": "send_email", "parameters": {"to": "ops", "body": "sunny"}}]<|im_end|>\n'
    )
    assert "Current weather" in text


def test_text_answer_with_tools_is_plain_text(tokenizer: Any) -> None:
    _, labelled = split(
        tokenizer, record("auto", {"role": "assistant", "content": "It is sunny; mail sent."})
    )
    assert labelled.endswith("It is sunny; mail sent.<|im_end|>\n")


def test_preference_prompts_write_earlier_calls_as_serving_does(
    tokenizer: Any, hermes_tokenizer: Any
) -> None:
    example = Example(
        kind="preference", source="s", messages=(*PROMPT, {"role": "user", "content": "And now?"}),
        chosen="Mail sent.", rejected="No idea.",
    )  # fmt: skip
    (row,) = encode_preference(example, tokenizer, 512, "dpo")
    assert row.record["prompt"][1] == {
        "role": "assistant",
        "content": '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    }
    assert all(set(m) == {"role", "content"} for m in row.record["prompt"])  # one Arrow shape for every row
    # a template that renders tool calls: the earlier call is the text it renders, the prompt as served
    (row,) = encode_preference(example, hermes_tokenizer, 512, "dpo")
    assert row.record["prompt"][1] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    }
    assert all(set(m) == {"role", "content"} for m in row.record["prompt"])
    served = render_served(hermes_tokenizer, example.messages, (), None)
    assert (
        hermes_tokenizer.apply_chat_template(row.record["prompt"], tokenize=False, add_generation_prompt=True)
        == served
    )
    # a template whose tool-call turns cannot be written as content is refused, counted
    hermes_tokenizer.chat_template = hermes_tokenizer.chat_template.replace(
        "'<|im_start|>assistant' }}", "'<|im_start|>calls' }}"
    )
    with pytest.raises(RowRejected, match="tool_calls_unsupported"):
        encode_preference(example, hermes_tokenizer, 512, "dpo")
