"""Fuzz the OpenAI and admin APIs from the app's own OpenAPI document (schemathesis), over real HTTP on
127.0.0.1 against a replica with a registry (SQLite), one adapter and an experiment, on FakeEngine.

Every operation in `/schema/openapi.json` gets valid and invalid bodies, path parameters and headers
(bounded: `TUNELOOP_FUZZ_EXAMPLES` examples per operation and mode, default 25). Requests carry the
admin token so the fuzzer gets past authentication into validation, and half of the generated bodies
name a model that exists, so valid ones reach the engine. The only check is `not_a_server_error`:
whatever a client sends, the answer is never a 5xx (503 is allowed only for /health and /ready, which
report state).

Also proves the document is accurate enough to reach the endpoints: every operation with a JSON body
documents it (`requestBody` from the pydantic models), so generated valid requests reach the handlers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from reliability_harness import ADMIN_TOKEN, BASE, LiveServer, adapter_folder, build_runtime, make_config
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err

from serving.registry.testing import SMOLLM2_MODULES

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

MAX_EXAMPLES = int(os.environ.get("TUNELOOP_FUZZ_EXAMPLES", "25"))
STATE_ENDPOINTS = {"/health", "/ready"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    model = tmp / "models" / BASE
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("serving.runtime.resolve_base_model", lambda spec: model)
        mp.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
        mp.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
        incoming = tmp / "home" / "registry" / "incoming"
        runtime = build_runtime(make_config(tmp / "home", swap_timeout_s=2))
        runtime.registry.register(adapter_folder(tmp, 1), "support", alias="champion")
        runtime.registry.register(adapter_folder(tmp, 2), "support", alias="challenger")
        runtime.registry.create_experiment(
            "support-ab", [("support@champion", 0.5), ("support@challenger", 0.5)]
        )
        adapter_folder(incoming, 3)  # something the fuzzer may register
        server = LiveServer(runtime).start()
        try:
            yield server
        finally:
            server.stop()


def test_schema_documents_every_json_body(fuzz_server: LiveServer) -> None:
    doc = httpx.get(f"{fuzz_server.url}/schema/openapi.json").json()
    with_body = {
        (path, method)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "requestBody" in op
    }
    assert with_body == {
        ("/v1/chat/completions", "post"),
        ("/v1/completions", "post"),
        ("/v1/feedback", "post"),
        ("/admin/adapters", "post"),
        ("/admin/adapters/{name}/aliases/{alias}", "put"),
        ("/admin/adapters/{name}/rollback", "post"),
        ("/admin/experiments", "post"),
    }
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])


def with_known_models(cases: st.SearchStrategy[schemathesis.Case]) -> st.SearchStrategy[schemathesis.Case]:
    """Half of the bodies that have a `model` get one that exists (else nearly every request is a 404)."""

    def pick(pair: tuple[schemathesis.Case, str | None]) -> schemathesis.Case:
        case, model = pair
        if model is not None and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model
        return case

    return st.tuples(cases, st.sampled_from([None, BASE, "support", "support@champion", "support-ab"])).map(
        pick
    )


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str) -> dict[str, Any]:
    """Up to MAX_EXAMPLES generated requests to one operation; returns counts and any 5xx."""
    seen: dict[str, Any] = {"requests": 0, "statuses": {}, "server_errors": []}

    @given(case=with_known_models(operation.as_strategy(generation_mode=mode)))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report every 5xx as found
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(
            base_url=base_url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        )
        seen["requests"] += 1
        status = response.status_code
        seen["statuses"][status] = seen["statuses"].get(status, 0) + 1
        if case.path in STATE_ENDPOINTS and status == 503:
            return  # a readiness report, not an error
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup:  # collected, reported together below
            seen["server_errors"].append(f"{status} {case.as_curl_command()} -> {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:
        seen["unsatisfiable"] = True  # nothing to make invalid (no parameters, no body)
    return seen


def fuzz_all(base_url: str) -> dict[str, dict[str, Any]]:
    """Every operation of the served document, positive and negative generation."""
    api = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    report: dict[str, dict[str, Any]] = {}
    for result in api.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"the served OpenAPI document is invalid: {result.err()}")
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            report[f"{operation.method.upper()} {operation.path} [{mode.value}]"] = fuzz_operation(
                operation, mode, base_url
            )
    return report


def test_no_server_error_for_any_client_input(fuzz_server: LiveServer) -> None:
    report = fuzz_all(fuzz_server.url)
    errors = [e for entry in report.values() for e in entry["server_errors"]]
    assert errors == [], "\n".join(errors[:20])
    assert len(report) >= 2 * 17  # every operation, both modes
    total = sum(entry["requests"] for entry in report.values())
    assert total >= len(report) * min(MAX_EXAMPLES, 5)
    reached = {k for k, entry in report.items() if any(200 <= s < 300 for s in entry["statuses"])}
    for key in ("POST /v1/chat/completions [positive]", "POST /v1/completions [positive]"):
        assert key in reached  # valid generated requests get through validation to the engine


# ------------------------------------------------------------------ issue 15: the new request fields
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_SCHEMAS = st.one_of(
    st.just({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
    st.just({"type": "array", "items": {"type": "integer"}}),
    st.just({"type": "objekt"}),
    st.dictionaries(
        st.sampled_from(["type", "properties", "items", "enum", "anyOf", "$ref", "required"]), _JSON
    ),
    _JSON,
)
_TOOL = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["function", "function", "retrieval"]),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["get_weather", "f", "", "bad name"]), "parameters": _SCHEMAS}
        ),
    }
)
_NEW_FIELDS = {
    "response_format": st.one_of(
        st.just({"type": "json_object"}),
        st.just({"type": "text"}),
        st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["x", "Person", ""]),
                        "schema": _SCHEMAS,
                        "strict": st.booleans(),
                    }
                ),
            }
        ),
        _JSON,
    ),
    "tools": st.lists(_TOOL, max_size=3) | _JSON,
    "tool_choice": st.sampled_from(["none", "auto", "required", "bogus"])
    | st.just({"type": "function", "function": {"name": "get_weather"}})
    | _JSON,
    "parallel_tool_calls": st.booleans() | _JSON,
    "logprobs": st.booleans() | st.integers(-2, 30) | _JSON,
    "top_logprobs": st.integers(-2, 30) | _JSON,
    "logit_bias": st.dictionaries(st.sampled_from(["0", "5", "99999999", "-1", "x"]), st.floats(-200, 200))
    | _JSON,
    "top_k": st.integers(-3, 10**6) | _JSON,
    "min_p": st.floats(-1, 2) | _JSON,
    "repetition_penalty": st.floats(-1, 3) | _JSON,
    "ignore_eos": st.booleans() | _JSON,
    "min_tokens": st.integers(-1, 10**4) | _JSON,
    "seed": st.integers(-(2**70), 2**70) | _JSON,
    "n": st.integers(0, 10),
    "temperature": st.sampled_from([0, 0.0, 0.7, 3]),
    "stream": st.booleans() | st.sampled_from(["yes", 1]),
    "max_tokens": st.integers(-1, 40),
    "echo": st.booleans() | _JSON,
    "stop_token_ids": st.lists(st.integers(-2, 10**6), max_size=3) | _JSON,
    "include_stop_str_in_output": st.booleans() | _JSON,
    "skip_special_tokens": st.booleans() | _JSON,
    "spaces_between_special_tokens": st.booleans() | _JSON,
    "allowed_token_ids": st.lists(st.integers(-2, 10**6), max_size=3) | _JSON,
    "bad_words": st.lists(st.sampled_from(["the", "", " ", "x y"]), max_size=3) | _JSON,
    "stream_interval": st.integers(-1, 2000) | _JSON,
    "structured_outputs": st.sampled_from(
        [
            {"choice": ["yes", "no"]},
            {"choice": []},
            {"regex": "[a-z]+"},
            {"grammar": 'root ::= "a"'},
            {"json": '{"type": "object"}'},
            {"json": "not json"},
            {"json_object": True},
            {"json_object": False},
            {"choice": ["a"], "regex": "a"},
            {"structural_tag": "x"},
            {},
        ]
    )
    | st.fixed_dictionaries({"json": _SCHEMAS})
    | _JSON,
    "priority": st.integers(-20, 2**40) | _JSON,
    "truncate_prompt_tokens": st.integers(-3, 10**6) | _JSON,
    "truncation_side": st.sampled_from(["left", "right", "middle"]) | _JSON,
    "add_generation_prompt": st.booleans() | _JSON,
    "continue_final_message": st.booleans() | _JSON,
    "chat_template_kwargs": st.sampled_from([{"enable_thinking": False}, {"tokenize": True}, {}]) | _JSON,
    "prompt": st.text(min_size=1, max_size=12)
    | st.lists(st.integers(-5, 10**10), min_size=0, max_size=6)
    | st.lists(st.lists(st.integers(0, 50000), max_size=4), max_size=3),
}


def test_new_fields_never_a_server_error(fuzz_server: LiveServer) -> None:
    """Bodies mixing the fields issue 15 added (valid and not) on both endpoints: 4xx or 2xx, never 5xx."""
    seen: dict[str, Any] = {"statuses": {}, "server_errors": []}

    @given(
        path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
        model=st.sampled_from([BASE, "support@champion"]),
        fields=st.dictionaries(st.sampled_from(sorted(_NEW_FIELDS)), st.none(), max_size=6).flatmap(
            lambda keys: st.fixed_dictionaries({k: _NEW_FIELDS[k] for k in keys})
        ),
    )
    @settings(
        max_examples=MAX_EXAMPLES * 8,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(path: str, model: str, fields: dict[str, Any]) -> None:
        body: dict[str, Any] = {"model": model, **fields}
        if path.endswith("chat/completions"):
            body.pop("prompt", None)
            body["messages"] = [{"role": "user", "content": "what is the weather? use a tool"}]
        else:
            body.setdefault("prompt", "hello")
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        r = httpx.post(f"{fuzz_server.url}{path}", json=body, headers=headers, timeout=30)
        seen["statuses"][r.status_code] = seen["statuses"].get(r.status_code, 0) + 1
        if r.status_code >= 500:
            seen["server_errors"].append(f"{r.status_code} {json.dumps(body)[:400]} -> {r.text[:300]}")
        elif r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        elif body.get("stream") is True:
            assert '"type":"server_error"' not in r.text, (body, r.text[-300:])

    run()
    assert seen["server_errors"] == [], "\n".join(seen["server_errors"][:20])
    assert seen["statuses"].get(200, 0) > 0 and any(400 <= s < 500 for s in seen["statuses"])
