"""Request validation (issue 15): strict types, unknown fields named, the new fields' rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from serving.api.errors import validation_error
from serving.protocol import ChatCompletionRequest, CompletionRequest, tools_json_schema

MSG = [{"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MSG, **kw}


def error_of(
    model: type[ChatCompletionRequest | CompletionRequest], body: dict[str, Any]
) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(body))
    err = validation_error(info.value)
    assert err.status_code == 400
    return err.param, err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(stream="yes"), "stream"),
        (chat(n="2"), "n"),
        (chat(max_tokens="5"), "max_tokens"),
        (chat(temperature="0.5"), "temperature"),
        (chat(logprobs="true"), "logprobs"),
        (chat(top_k=1.5), "top_k"),
        (chat(ignore_eos=1), "ignore_eos"),
    ],
)
def test_no_type_coercion(body: dict[str, Any], param: str) -> None:
    assert error_of(ChatCompletionRequest, body)[0] == param


def test_integral_numbers_are_integers() -> None:
    req = ChatCompletionRequest.model_validate_json(json.dumps(chat(n=2.0, max_tokens=5.0, seed=3.0)))
    assert (req.n, req.max_tokens, req.seed) == (2, 5, 3) and isinstance(req.n, int)
    assert error_of(ChatCompletionRequest, chat(n=1.5))[0] == "n"
    assert error_of(ChatCompletionRequest, chat(n=True))[0] == "n"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(frobnicate=1), "frobnicate"),
        (chat(functions=[{"name": "f"}]), "functions"),
        (chat(function_call="auto"), "function_call"),
        (chat(reasoning_effort="low"), "reasoning_effort"),
        (chat(audio={"voice": "x"}), "audio"),
        (chat(messages=[{"role": "user", "content": "hi", "weird": 1}]), "messages.0.weird"),
        (chat(response_format={"type": "json_object", "extra": 1}), "response_format.extra"),
        (chat(tools=[{**TOOL, "x": 1}]), "tools.0.x"),
        (chat(stream_options={"include_usage": True, "chunk_size": 3}), "stream_options.chunk_size"),
    ],
)
def test_unknown_fields_are_named(body: dict[str, Any], param: str) -> None:
    got, message = error_of(ChatCompletionRequest, body)
    assert got == param
    assert "Unrecognized request argument" in message


def test_harmless_fields_and_nulls_are_accepted() -> None:
    req = ChatCompletionRequest.model_validate_json(
        json.dumps(
            chat(
                store=False,
                service_tier="auto",
                prompt_cache_key="k",
                safety_identifier="u",
                modalities=["text"],
                temperature=None,
                top_p=None,
                n=None,
                stream=None,
                seed=None,
                logprobs=None,
                stream_options={"include_usage": True, "include_obfuscation": False},
            )
        )
    )
    assert req.temperature == 1.0 and req.n == 1 and req.include_usage()
    assert ChatCompletionRequest.model_validate_json(json.dumps(chat(temperature=1))).temperature == 1.0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(top_logprobs=3), "top_logprobs"),
        (chat(logprobs=True, top_logprobs=21), "top_logprobs"),
        (chat(tool_choice="required"), "tool_choice"),
        (chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (chat(tools=[]), "tools"),
        (chat(tools=[TOOL, TOOL]), "tools"),
        (
            chat(tools=[TOOL], tool_choice="required", response_format={"type": "json_object"}),
            "response_format",
        ),
        (chat(response_format={"type": "json_schema"}), "response_format.json_schema"),
        (chat(response_format={"type": "yaml"}), "response_format.type"),
        (chat(logit_bias={"abc": 1}), "logit_bias.abc"),
        (chat(logit_bias={"5": 101}), "logit_bias.5"),
        (chat(min_p=2), "min_p"),
        (chat(repetition_penalty=0), "repetition_penalty"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(messages=[{"role": "tool", "content": "x"}, *MSG]), "messages.0.tool_call_id"),
        (chat(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages.0.tool_calls"),
    ],
)
def test_chat_field_rules(body: dict[str, Any], param: str) -> None:
    assert error_of(ChatCompletionRequest, body)[0] == param


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "wizard", "content": "x"}], "messages.0.role"),
        ([{"content": "x"}], "messages.0.role"),
        ([*MSG, {"role": "assistant"}], "messages.1"),
        ([*MSG, {"role": "user", "content": 5}], "messages.1.content"),
        (
            [*MSG, {"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "type": "function"}]}],
            "messages.1.tool_calls.0.function",
        ),
    ],
)
def test_message_errors_name_the_field(messages: list[dict[str, Any]], param: str) -> None:
    assert error_of(ChatCompletionRequest, chat(messages=messages))[0] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
        ({"model": "m", "prompt": "x", "best_of": 2}, "best_of"),
        ({"model": "m", "prompt": "x", "logprobs": 21}, "logprobs"),
        ({"model": "m", "prompt": "x", "logprobs": True}, "logprobs"),
        ({"model": "m", "prompt": [[]]}, "prompt"),
        ({"model": "m", "prompt": [-1, 2]}, "prompt"),
    ],
)
def test_completion_field_rules(body: dict[str, Any], param: str) -> None:
    assert error_of(CompletionRequest, body)[0] == param


def test_completion_prompts_text_and_token_ids() -> None:
    def prompts(p: Any) -> list[Any]:
        return CompletionRequest.model_validate_json(json.dumps({"model": "m", "prompt": p})).prompts()

    assert prompts("a") == ["a"]
    assert prompts(["a", "b"]) == ["a", "b"]
    assert prompts([1, 2]) == [[1, 2]]
    assert prompts([[1], [2, 3]]) == [[1], [2, 3]]
    echo = CompletionRequest.model_validate_json(
        json.dumps({"model": "m", "prompt": "x", "echo": True, "max_tokens": 0, "logprobs": 1, "best_of": 1})
    )
    assert echo.echo and echo.max_tokens == 0


def test_tool_history_and_engine_messages() -> None:
    req = ChatCompletionRequest.model_validate_json(
        json.dumps(
            chat(
                messages=[
                    *MSG,
                    {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a": 1}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                ]
            )
        )
    )
    messages = req.engine_messages()
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert messages[1]["content"] == ""
    assert messages[2] == {"role": "tool", "content": "42", "tool_call_id": "call_1"}


def test_tool_schemas_as_vllm_builds_them() -> None:
    req = ChatCompletionRequest.model_validate_json(json.dumps(chat(tools=[TOOL], tool_choice="required")))
    assert req.forced_tools() and req.effective_tool_choice() == "required"
    schema = req.tool_schema()
    assert schema is not None and schema["type"] == "array" and schema["minItems"] == 1
    assert schema["items"]["anyOf"][0]["properties"]["name"]["enum"] == ["get_weather"]
    assert "maxItems" not in schema
    assert tools_json_schema(req.tools or [], parallel=False)["maxItems"] == 1
    named = ChatCompletionRequest.model_validate_json(
        json.dumps(chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    )
    assert named.tool_schema() == TOOL["function"]["parameters"]  # type: ignore[index]
    auto = ChatCompletionRequest.model_validate_json(json.dumps(chat(tools=[TOOL])))
    assert auto.effective_tool_choice() == "auto" and auto.tool_schema() is None
    assert json.loads(auto.tools_log() or "")["tool_choice"] == "auto"


def test_response_format_schema_alias() -> None:
    rf = {
        "type": "json_schema",
        "json_schema": {"name": "Person", "schema": {"type": "object"}, "strict": True},
    }
    req = ChatCompletionRequest.model_validate_json(json.dumps(chat(response_format=rf)))
    assert req.json_format() == ({"type": "object"}, False)
    assert json.loads(req.format_log() or "") == rf
    obj = ChatCompletionRequest.model_validate_json(json.dumps(chat(response_format={"type": "json_object"})))
    assert obj.json_format() == (None, True)
    text = ChatCompletionRequest.model_validate_json(json.dumps(chat(response_format={"type": "text"})))
    assert text.json_format() == (None, False) and text.format_log() is None
