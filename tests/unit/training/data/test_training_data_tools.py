"""Tool-calling chat records (`training.data.tools` and the chat template): reading tools and tool calls in
every logged or dataset shape, corrections as tool calls, and the rendering rule given to chat templates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tool_records import TOOLS, WEATHER  # type: ignore[import-not-found]

from training.config import TemplateOptions
from training.data.example import Example, RowRejected
from training.data.format import format_row
from training.data.tools import (
    calls_from_correction,
    chat_for_template,
    parse_tool_calls,
    parse_tool_choice,
    parse_tools,
)

NAMED = {"type": "function", "function": {"name": "get_weather"}}
PARIS = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def chat(row: dict[str, Any]) -> Example:
    mapping = {"messages": "messages", "tools": "tools", "tool_choice": "tool_choice"}
    return format_row(row, "chat", mapping, TemplateOptions(), "s")


@pytest.mark.parametrize(
    "logged",
    [
        '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}]',  # request log: arguments text
        [{"name": "get_weather", "parameters": {"city": "Paris"}}],  # vLLM's required array
        [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],  # OpenAI
        [PARIS],  # chat template form
    ],
)
def test_tool_calls_in_every_shape_read_as_the_chat_template_form(logged: Any) -> None:
    assert parse_tool_calls(logged) == [PARIS]


@pytest.mark.parametrize(
    "logged",
    [
        "[{not json",
        '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Par"}]',  # cut short by max_tokens
        '[{"name": "get_weather", "arguments": "[1, 2]"}]',  # not an object
        '[{"arguments": "{}"}]',  # no name
        '[[{"name": "get_weather", "arguments": "{}"}]]',  # n > 1: one list per choice
        '{"name": "get_weather"}',
    ],
)
def test_unreadable_tool_calls_are_a_counted_reason(logged: str) -> None:
    with pytest.raises(RowRejected) as info:
        parse_tool_calls(logged)
    assert info.value.reason == "bad_tool_calls"


def test_tools_and_tool_choice() -> None:
    assert parse_tools(json.dumps(TOOLS)) == tuple(TOOLS)
    assert parse_tools([WEATHER["function"]]) == (WEATHER,)  # a bare function definition is wrapped
    assert parse_tool_choice("required") == "required" and parse_tool_choice(None) is None
    assert parse_tool_choice(json.dumps(NAMED)) == NAMED
    for bad_tools in ("{oops", [{"type": "retrieval"}], [{"function": {}}], {"tools": []}):
        with pytest.raises(RowRejected, match="bad_tools"):
            parse_tools(bad_tools)
    with pytest.raises(RowRejected, match="bad_tools"):
        parse_tool_choice("sometimes")


def test_chat_template_reads_a_tool_calling_conversation() -> None:
    ex = chat(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", **PARIS}]},
                {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1", "name": "get_weather"},
                {"role": "assistant", "content": "21 degrees."},
            ],
            "tools": json.dumps(TOOLS),
            "tool_choice": "auto",
        }
    )
    assert ex.tools == tuple(TOOLS) and ex.tool_choice == "auto" and ex.has_tool_calls
    assert ex.messages[1] == {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", **PARIS}]}
    assert ex.messages[2] == {
        "role": "tool",
        "content": '{"temp": 21}',
        "tool_call_id": "call_1",
        "name": "get_weather",
    }
    assert ex.content()["tools"] == TOOLS and ex.content()["tool_choice"] == "auto"
    # the trained text holds the calls as JSON, so a tool-call-only answer is not "empty"
    assert '[{"name": "get_weather", "arguments": {"city": "Paris"}}]' in ex.target_text()


def test_chat_without_tools_keeps_its_content_hash() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    ex = chat({"messages": messages})
    assert ex.content() == {"kind": "chat", "messages": messages}
    assert ex.content_hash == Example(kind="chat", source="x", messages=tuple(messages)).content_hash


def test_a_named_tool_choice_answers_with_one_call_of_that_function() -> None:
    mail = {"type": "function", "function": {"name": "send_email", "arguments": {"to": "ops", "body": "x"}}}
    for calls in ([mail], [PARIS, PARIS]):
        row = {"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "tool_calls": calls}]}
        with pytest.raises(RowRejected, match="tool_choice_mismatch"):
            chat({**row, "tools": TOOLS, "tool_choice": NAMED})
        assert chat({**row, "tools": TOOLS, "tool_choice": "required"}).messages[-1]["tool_calls"] == calls


def test_an_answer_of_tool_calls_alone_is_an_assistant_turn() -> None:
    ex = chat(
        {"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant", "tool_calls": [PARIS]}]}
    )
    assert ex.messages[-1]["content"] == "" and ex.tool_choice is None
    with pytest.raises(RowRejected, match="no_assistant_turn"):
        chat({"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant", "content": ""}]})


@pytest.mark.parametrize(
    ("correction", "choice", "expected"),
    [
        ('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', "required", [PARIS]),
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "auto", [PARIS]),
        ('{"city": "Paris"}', NAMED, [PARIS]),  # named: the arguments alone
        (
            '{"name": "Bob"}',
            NAMED,
            [{**PARIS, "function": {"name": "get_weather", "arguments": {"name": "Bob"}}}],
        ),
        ('{"city": "Paris"}', "required", None),  # no function named
        ('[{"name": "launch_rocket", "arguments": {}}]', "required", None),  # not a defined function
        ("Which city do you mean?", "required", None),  # words
        ("42", "auto", None),
    ],
)
def test_corrections_that_state_tool_calls(correction: str, choice: Any, expected: Any) -> None:
    assert calls_from_correction(correction, TOOLS, choice) == expected


def test_rendering_rule_for_a_template_without_tools(tokenizer: Any) -> None:
    """SmolLM2's template renders neither tools nor tool calls: as serving, no definitions in the prompt,
    earlier calls as JSON text, the answer in the forced choice's format."""
    history_call = {"id": "call_1", **PARIS}
    messages = (
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [history_call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "", "tool_calls": [PARIS]},
    )
    expected_answer = {
        "auto": '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "required": '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
        "named": '{"city": "Paris"}',
    }
    for key, choice in (("auto", "auto"), ("required", "required"), ("named", NAMED)):
        rendered, tools = chat_for_template(messages, TOOLS, choice, tokenizer)
        assert tools is None
        assert rendered[1] == {"role": "assistant", "content": expected_answer["auto"]}  # history: rule 2
        assert rendered[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
        assert rendered[3] == {"role": "assistant", "content": expected_answer[key]}


def test_rendering_rule_for_a_template_with_tools(hermes_tokenizer: Any) -> None:
    messages = (
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [PARIS]},
    )
    rendered, tools = chat_for_template(messages, TOOLS, "auto", hermes_tokenizer)
    assert tools == TOOLS and rendered[1]["tool_calls"] == [PARIS]  # the template renders them
    rendered, tools = chat_for_template(messages, TOOLS, "required", hermes_tokenizer)
    assert tools == TOOLS  # definitions in the prompt, the answer is the grammar's array
    assert rendered[1] == {
        "role": "assistant",
        "content": '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
    }
    _, tools = chat_for_template(messages, TOOLS, "none", hermes_tokenizer)
    assert tools is None  # tool_choice none: serving passes no tools
