"""Issue 15 through experiments: structured outputs and tool calls reach every arm and the shadow copy, and
the request log keeps the response format, tools and calls of each row (primary and shadow). Real runtime
(registry on SQLite, HTTP app) on the fake engine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from serving.config import ServingConfig
from serving.engine.fake import FakeEngine
from serving.registry.testing import SMOLLM2_MODULES, write_adapter
from serving.runtime import ServingRuntime

BASE = "SmolLM2-135M-Instruct"
TOKEN = "admin-secret"
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"intent": {"enum": ["refund", "shipping"]}},
    "required": ["intent"],
}


@pytest.fixture()
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ServingRuntime, TestClient, FakeEngine]]:  # type: ignore[type-arg]
    model = tmp_path / "models" / BASE
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setattr("serving.runtime.resolve_base_model", lambda spec: model)
    monkeypatch.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
    monkeypatch.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
    config = ServingConfig(
        home=tmp_path / "home",
        engine={"kind": "fake"},  # type: ignore[arg-type]
        admin_token=TOKEN,  # type: ignore[arg-type]
        poll_interval_s=0.05,
        swap_timeout_s=10,
    )
    engine = FakeEngine(BASE, max_model_len=512)
    rt = ServingRuntime.build(config, engine=engine, replica_id="r1")
    for seed, alias in ((1, "champion"), (2, "challenger"), (3, "shadowed")):
        rt.registry.register(
            write_adapter(tmp_path / f"src-{seed}", base_model=BASE, seed=seed), "support", alias=alias
        )
    rt.registry.create_experiment(
        "exp1", [("support@champion", 0.5), ("support@challenger", 0.5)], shadow="support@shadowed"
    )
    with TestClient(rt.http_app()) as client:
        client.blocking_portal.call(rt.start)
        client.blocking_portal.call(rt.core.reconcile)
        yield rt, client, engine
        client.blocking_portal.call(rt.close)


def _rows(rt: ServingRuntime) -> list[Any]:
    rt.request_log.flush(5)
    with rt.db.session() as s:
        return list(
            s.execute(
                text(
                    "select id, arm, shadow_of, response_format, tools, tool_calls "
                    "from requests order by created_at"
                )
            ).all()
        )


def test_structured_and_tool_requests_through_arms_and_shadow(
    served: tuple[ServingRuntime, TestClient, FakeEngine],  # type: ignore[type-arg]
) -> None:
    rt, client, engine = served
    messages = [{"role": "user", "content": "where is my order 42?"}]
    rf = {"type": "json_schema", "json_schema": {"name": "Intent", "schema": SCHEMA, "strict": True}}
    arms = set()
    for i in range(12):
        r = client.post(
            "/v1/chat/completions",
            json={"model": "exp1", "user": f"u{i}", "messages": messages, "response_format": rf},
        )
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["choices"][0]["message"]["content"])["intent"] in ("refund", "shipping")
        arms.add(r.headers["x-tuneloop-served-by"])
    assert len(arms) == 2  # both arms answered structured requests
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": "exp1",
            "user": "u0",
            "messages": messages,
            "tools": [TOOL],
            "tool_choice": "required",
        },
    )
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup_order"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # shadow copies run after the answer
        rows = _rows(rt)
        if sum(1 for row in rows if row[2] is not None) >= 13:
            break
        time.sleep(0.05)
    shadows = [row for row in rows if row[2] is not None]
    primaries = [row for row in rows if row[2] is None]
    assert len(primaries) == 13 and len(shadows) == 13
    assert all(json.loads(row[3])["type"] == "json_schema" for row in primaries[:12] + shadows[:12])
    tool_rows = [row for row in rows if row[4] is not None]
    assert len(tool_rows) == 2  # the primary and its shadow
    assert all(json.loads(row[5])[0]["name"] == "lookup_order" for row in tool_rows)
    served_requests = [r for r in engine.requests if "chatcmpl" in r.request_id]  # not the load smoke tests
    assert len(served_requests) == 26
    assert all(r.sampling.structured is not None and r.lora is not None for r in served_requests)
    assert sum(r.request_id.startswith("shadow-") for r in served_requests) == 13
