"""Issue 15 through the real Litestar app on the fake engine: structured outputs, sampling extensions reaching
the engine, log-probabilities, echo, tools (non-streamed and streamed), and what the request log records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from serving.api.app import build_http_app
from serving.core import CoreConfig, ServingCore
from serving.engine.fake import FakeEngine
from serving.request_log import RequestRecord

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


class Records:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def log(self, record: RequestRecord) -> bool:
        self.records.append(record)
        return True


class App:
    def __init__(self, client: TestClient, engine: FakeEngine, log: Records) -> None:  # type: ignore[type-arg]
        self.client = client
        self.engine = engine
        self.log = log

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body)

    def chat_text(self, body: dict[str, Any], *, stream: bool) -> str:
        """The answer's content, streamed (deltas joined) or not."""
        if stream:
            return stream_text(self.stream("/v1/chat/completions", body))
        r = self.post("/v1/chat/completions", body)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    def stream(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        r = self.client.post(path, json={**body, "stream": True})
        assert r.status_code == 200, r.text
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]
        return [json.loads(e) for e in events[:-1]]


def make_app(tool_parser: bool = False) -> Iterator[App]:
    engine = FakeEngine("fake-base", max_model_len=256, tool_parser=tool_parser)
    log = Records()
    core = ServingCore(engine, None, CoreConfig(base_id="fake-base"), request_log=log)
    asyncio.run(core.start())
    with TestClient(build_http_app(core)) as c:
        yield App(c, engine, log)


@pytest.fixture()
def app() -> Iterator[App]:
    yield from make_app()


def chat(content: str = "hello there", **kw: Any) -> dict[str, Any]:
    return {"model": "fake-base", "messages": [{"role": "user", "content": content}], **kw}


def stream_text(events: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"])


# ------------------------------------------------------------------ structured outputs
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_and_json_object(app: App, stream: bool) -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "Person", "schema": PERSON, "strict": True}}
    for fmt in (rf, {"type": "json_object"}):
        body = chat(response_format=fmt, max_tokens=100)
        text = app.chat_text(body, stream=stream)
        value = json.loads(text)
        assert isinstance(value, dict)
        if fmt is rf:
            assert set(value) == {"name", "age"} and isinstance(value["age"], int)
        structured = app.engine.requests[-1].sampling.structured
        assert structured is not None and structured.param == "response_format"
    comp = app.post(
        "/v1/completions", {"model": "fake-base", "prompt": "x", "response_format": rf, "max_tokens": 100}
    )
    assert comp.status_code == 200 and set(json.loads(comp.json()["choices"][0]["text"])) == {"name", "age"}
    record = app.log.records[-1]
    assert record.response_format is not None and json.loads(record.response_format)["type"] == "json_schema"


def test_schema_the_engine_cannot_compile_is_a_400_naming_response_format(app: App) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"x-fake-invalid": True}}}
    r = app.post("/v1/chat/completions", chat(response_format=bad))
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
    events = app.client.post("/v1/chat/completions", json=chat(response_format=bad, stream=True))
    assert '"param":"response_format"' in events.text
    assert app.post("/v1/chat/completions", chat()).status_code == 200


# ------------------------------------------------------------------ sampling extensions
def test_sampling_extensions_reach_the_engine(app: App) -> None:
    body = chat(
        top_k=5,
        min_p=0.1,
        repetition_penalty=1.2,
        logit_bias={"7": -100, "12": 5.5},
        ignore_eos=True,
        min_tokens=2,
        seed=3,
        max_tokens=6,
    )
    r = app.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    s = app.engine.requests[-1].sampling
    assert (s.top_k, s.min_p, s.repetition_penalty, s.ignore_eos, s.min_tokens, s.seed) == (
        5,
        0.1,
        1.2,
        True,
        2,
        3,
    )
    assert s.logit_bias == {7: -100.0, 12: 5.5}
    assert r.json()["usage"]["completion_tokens"] == 6  # ignore_eos: up to max_tokens


def test_unknown_field_and_coercion_are_400s_through_http(app: App) -> None:
    r = app.post("/v1/chat/completions", chat(stream="yes"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    r = app.post("/v1/chat/completions", chat(frobnicate=True))
    assert r.status_code == 400 and r.json()["error"]["param"] == "frobnicate"
    assert r.json()["error"]["code"] == "unknown_parameter"
    r = app.post("/v1/completions", {"model": "fake-base", "prompt": "x", "echo": "true"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo"
    r = app.post("/v1/chat/completions", chat(max_tokens=2, min_tokens=3))  # a check across two fields
    assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens", r.text


# ------------------------------------------------------------------ vLLM's other request extensions
def test_vllm_extensions_reach_the_engine(app: App) -> None:
    body = chat(
        stop_token_ids=[2, 7],
        include_stop_str_in_output=True,
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
        allowed_token_ids=[5, 6, 7],
        bad_words=["darn", "dang it"],
        stream_interval=4,
        priority=3,
    )
    for path, b in (("/v1/chat/completions", body), ("/v1/completions", completion_body(body))):
        r = app.post(path, b)
        assert r.status_code == 200, r.text
        s = app.engine.requests[-1].sampling
        assert (s.stop_token_ids, s.include_stop_str_in_output, s.allowed_token_ids, s.bad_words) == (
            (2, 7),
            True,
            (5, 6, 7),
            ("darn", "dang it"),
        )
        assert (s.skip_special_tokens, s.spaces_between_special_tokens, s.stream_interval) == (
            False,
            False,
            4,
        )
        assert app.engine.requests[-1].priority == 3
    app.post("/v1/chat/completions", chat())
    s = app.engine.requests[-1].sampling
    assert (s.stop_token_ids, s.allowed_token_ids, s.bad_words, s.stream_interval) == ((), None, (), None)
    assert s.skip_special_tokens and s.spaces_between_special_tokens and not s.include_stop_str_in_output


def completion_body(chat_body: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in chat_body.items() if k != "messages"}
    return {**body, "prompt": chat_body["messages"][-1]["content"]}


@pytest.mark.parametrize("stream", [False, True])
def test_structured_outputs_choice(app: App, stream: bool) -> None:
    choices = ["refund", "shipping", "other"]
    body = chat(structured_outputs={"choice": choices})
    text = app.chat_text(body, stream=stream)
    assert text in choices
    structured = app.engine.requests[-1].sampling.structured
    assert structured is not None and structured.choice == tuple(choices)
    assert structured.param == "structured_outputs"
    logged = json.loads(app.log.records[-1].response_format or "null")
    assert logged == {"structured_outputs": {"choice": choices}}


def test_structured_outputs_constraints_reach_the_engine(app: App) -> None:
    cases: list[tuple[dict[str, Any], str, Any]] = [
        ({"regex": "[0-9]{3}"}, "regex", "[0-9]{3}"),
        ({"grammar": 'root ::= "yes" | "no"'}, "grammar", 'root ::= "yes" | "no"'),
        ({"json": json.dumps(PERSON)}, "json_schema", PERSON),  # a schema as a string is parsed
        ({"json": PERSON, "disable_additional_properties": True}, "json_schema", PERSON),
        ({"json_object": True, "disable_any_whitespace": True}, "json_object", True),
    ]
    for so, attr, expected in cases:
        r = app.post("/v1/completions", {"model": "fake-base", "prompt": "x", "structured_outputs": so})
        assert r.status_code == 200, r.text
        structured = app.engine.requests[-1].sampling.structured
        assert structured is not None and getattr(structured, attr) == expected, so
        assert structured.disable_additional_properties == so.get("disable_additional_properties", False)
        assert structured.disable_any_whitespace == so.get("disable_any_whitespace", False)
    assert json.loads(
        app.post(
            "/v1/completions", {"model": "fake-base", "prompt": "x", "structured_outputs": {"json": PERSON}}
        ).json()["choices"][0]["text"]
    ).keys() == {"name", "age"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"structured_outputs": {"choice": ["a"], "regex": "a"}}, "structured_outputs"),
        ({"structured_outputs": {}}, "structured_outputs"),
        ({"structured_outputs": {"json_object": False}}, "structured_outputs"),
        ({"structured_outputs": {"json": "{not json"}}, "structured_outputs"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
        ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag"),
        (
            {"structured_outputs": {"choice": ["a"]}, "response_format": {"type": "json_object"}},
            "structured_outputs",
        ),
        (
            {"structured_outputs": {"choice": ["a"]}, "tools": [TOOL], "tool_choice": "required"},
            "structured_outputs",
        ),
        ({"structured_outputs": {"choice": ["a"]}, "allowed_token_ids": [1, 2]}, "allowed_token_ids"),
        ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos"),
        ({"tools": [TOOL], "tool_choice": "required", "ignore_eos": True}, "ignore_eos"),
        ({"stop_token_ids": [-1]}, "stop_token_ids.0"),
        ({"priority": -10}, "priority"),
        ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
        ({"truncate_prompt_tokens": -2}, "truncate_prompt_tokens"),
        ({"truncation_side": "left"}, "truncation_side"),
        ({"priority": "1"}, "priority"),
        ({"allowed_token_ids": []}, "allowed_token_ids"),
        ({"bad_words": [" "]}, "bad_words.0"),
        ({"stream_interval": 0}, "stream_interval"),
        ({"skip_special_tokens": "false"}, "skip_special_tokens"),
        ({"continue_final_message": True}, "continue_final_message"),
        ({"chat_template_kwargs": {"tokenize": True}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
    ],
)
def test_vllm_extensions_refuse_bad_values(app: App, extra: dict[str, Any], param: str) -> None:
    r = app.post("/v1/chat/completions", chat(**extra))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_prompt_truncation(app: App) -> None:
    long = " ".join(f"w{i}" for i in range(40))
    base = {"model": "fake-base", "prompt": long, "max_tokens": 4}
    for extra, side, tokens in (
        ({"truncate_prompt_tokens": 10}, "left", 10),
        ({"truncate_prompt_tokens": 10, "truncation_side": "right"}, "right", 10),
        ({"truncate_prompt_tokens": -1}, "left", 40),  # the context length (256) keeps it all
        ({}, "left", 40),
    ):
        r = app.post("/v1/completions", {**base, **extra})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens"] == tokens
        sent = app.engine.requests[-1]
        assert sent.truncate_prompt_tokens == extra.get("truncate_prompt_tokens")
        assert sent.truncation_side == side
    r = app.post("/v1/chat/completions", chat(long, truncate_prompt_tokens=5))
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 5, r.text


def test_chat_template_options_reach_the_engine(app: App) -> None:
    prefill = [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "The color is"}]
    body = {
        "model": "fake-base",
        "messages": prefill,
        "add_generation_prompt": False,
        "continue_final_message": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    r = app.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    sent = app.engine.requests[-1]
    assert (sent.add_generation_prompt, sent.continue_final_message) == (False, True)
    assert sent.chat_template_kwargs == {"enable_thinking": False}
    app.post("/v1/chat/completions", chat())
    sent = app.engine.requests[-1]
    assert (sent.add_generation_prompt, sent.continue_final_message, sent.chat_template_kwargs) == (
        True,
        False,
        None,
    )
    r = app.post("/v1/completions", {"model": "fake-base", "prompt": "x", "add_generation_prompt": False})
    assert r.status_code == 400 and r.json()["error"]["param"] == "add_generation_prompt", r.text


# ------------------------------------------------------------------ log-probabilities
def test_chat_logprobs(app: App) -> None:
    r = app.post("/v1/chat/completions", chat(logprobs=True, top_logprobs=2))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    assert all(len(t["top_logprobs"]) == 2 and t["bytes"] == list(t["token"].encode()) for t in content)
    plain = app.post("/v1/chat/completions", chat()).json()["choices"][0]
    assert plain["logprobs"] is None
    events = app.stream("/v1/chat/completions", chat(logprobs=True, top_logprobs=1))
    tokens = [t for e in events for c in e["choices"] if c.get("logprobs") for t in c["logprobs"]["content"]]
    assert "".join(t["token"] for t in tokens) == stream_text(events)


def test_completion_logprobs_and_echo(app: App) -> None:
    base = {"model": "fake-base", "prompt": "one two three"}
    r = app.post("/v1/completions", {**base, "logprobs": 1})
    lp = r.json()["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == r.json()["choices"][0]["text"]

    echoed = app.post("/v1/completions", {**base, "echo": True, "max_tokens": 0, "logprobs": 1}).json()
    choice = echoed["choices"][0]
    assert choice["text"] == "one two three" and choice["finish_reason"] == "length"
    assert choice["logprobs"]["token_logprobs"][0] is None and choice["logprobs"]["top_logprobs"][0] is None
    assert len(choice["logprobs"]["tokens"]) == 3 and echoed["usage"]["completion_tokens"] == 0
    assert choice["logprobs"]["text_offset"] == [0, 3, 7]

    # lm-evaluation-harness local-completions: token-id prompts, echo, max_tokens=1, logprobs=1
    harness = {
        "model": "fake-base",
        "prompt": [[5, 6, 7], [8, 9]],
        "echo": True,
        "max_tokens": 1,
        "logprobs": 1,
    }
    out = app.post("/v1/completions", {**harness, "temperature": 0, "seed": 1234}).json()
    assert [len(c["logprobs"]["tokens"]) for c in out["choices"]] == [4, 3]  # prompt + 1 generated token
    assert out["choices"][0]["text"].startswith("t5 t6 t7")

    events = app.stream("/v1/completions", {**base, "echo": True, "logprobs": 0})
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]).startswith("one two three")


# ------------------------------------------------------------------ tools
def test_tool_choice_required_and_named(app: App) -> None:
    r = app.post("/v1/chat/completions", chat(tools=[TOOL], tool_choice="required", max_tokens=200))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city", "days"}
    assert app.engine.requests[-1].sampling.structured.param == "tools"  # type: ignore[union-attr]
    record = app.log.records[-1]
    assert json.loads(record.tool_calls or "")[0]["name"] == "get_weather"
    assert json.loads(record.tools or "")["tool_choice"] == "required"

    named = {"type": "function", "function": {"name": "get_weather"}}
    r = app.post("/v1/chat/completions", chat(tools=[TOOL], tool_choice=named, max_tokens=200))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["days"] == 1

    none = app.post("/v1/chat/completions", chat(tools=[TOOL], tool_choice="none")).json()["choices"][0]
    assert none["message"]["content"] and "tool_calls" not in none["message"]


def test_streamed_tool_call_deltas(app: App) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice_param in (named, "required"):
        events = app.stream(
            "/v1/chat/completions", chat(tools=[TOOL], tool_choice=choice_param, max_tokens=200)
        )
        deltas = [c["delta"] for e in events for c in e["choices"]]
        calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
        assert calls[0]["id"] and calls[0]["type"] == "function"  # the first delta of a call announces it
        assert calls[0]["function"]["name"] == "get_weather"
        assert all("id" not in tc and "name" not in tc["function"] for tc in calls[1:])
        arguments = "".join(tc["function"].get("arguments", "") for tc in calls if tc["index"] == 0)
        assert set(json.loads(arguments)) == {"city", "days"}
        finish = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
        assert finish == (["stop"] if choice_param is named else ["tool_calls"])


def test_auto_tools_need_a_tool_capable_model(app: App) -> None:
    r = app.post("/v1/chat/completions", chat(tools=[TOOL]))
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"


def test_auto_tools_with_a_tool_parser() -> None:
    for app in make_app(tool_parser=True):
        r = app.post("/v1/chat/completions", chat("use a tool please", tools=[TOOL], tool_choice="auto"))
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        plain = app.post("/v1/chat/completions", chat("just chat", tools=[TOOL])).json()["choices"][0]
        assert plain["message"]["content"] and "tool_calls" not in plain["message"]
        history = [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
        r = app.post("/v1/chat/completions", {"model": "fake-base", "messages": history, "tools": [TOOL]})
        assert r.status_code == 200, r.text
        assert app.engine.requests[-1].messages[2]["role"] == "tool"  # type: ignore[index]
        assert app.engine.requests[-1].sampling.skip_special_tokens is False  # markers may be special tokens
