"""vLLM-compatible adapter endpoints (`POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`) through the
real Litestar app + registry (SQLite) on the fake engine: vLLM's bodies, its plain-text success and error
shapes, behind the admin token, mapped onto registry operations (register + alias via the hot-swap)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from serving.config import ServingConfig
from serving.engine.base import EngineError, LoRASpec
from serving.engine.fake import FakeEngine
from serving.registry.testing import SMOLLM2_MODULES, write_adapter
from serving.runtime import ServingRuntime

BASE = "SmolLM2-135M-Instruct"
TOKEN = "admin-secret"


class App:
    def __init__(
        self, runtime: ServingRuntime, client: TestClient, engine: FakeEngine, incoming: Path
    ) -> None:  # type: ignore[type-arg]
        self.runtime, self.client, self.engine, self.incoming = runtime, client, engine, incoming
        self.registry = runtime.registry

    def adapter(self, seed: int, **kw: Any) -> Path:
        return write_adapter(self.incoming / f"a-{seed}", base_model=BASE, seed=seed, **kw)

    def load(self, lora_name: str, lora_path: str | Path, token: str | None = TOKEN, **extra: Any) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        body = {"lora_name": lora_name, "lora_path": str(lora_path), **extra}
        return self.client.post("/v1/load_lora_adapter", json=body, headers=headers)

    def unload(self, lora_name: str, token: str | None = TOKEN) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self.client.post("/v1/unload_lora_adapter", json={"lora_name": lora_name}, headers=headers)

    def chat(self, model: str) -> Any:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        return self.client.post("/v1/chat/completions", json=body)


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    model = tmp_path / "models" / BASE
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setattr("serving.runtime.resolve_base_model", lambda spec: model)
    monkeypatch.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
    monkeypatch.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
    config = ServingConfig(
        home=tmp_path / "home",
        engine={"kind": "fake"},
        admin_token=TOKEN,  # type: ignore[arg-type]
        poll_interval_s=0.05,
        swap_timeout_s=10,
    )
    engine = FakeEngine(BASE, max_model_len=256)
    rt = ServingRuntime.build(config, engine=engine, replica_id="r1")
    incoming = Path(config.resolved_registry_root()) / "incoming"
    incoming.mkdir(parents=True)
    with TestClient(rt.http_app()) as client:
        client.blocking_portal.call(rt.start)
        yield App(rt, client, engine, incoming)
        client.blocking_portal.call(rt.close)


def vllm_error(r: Any, status: int, kind: str | None = None) -> str:
    """The message of a vLLM-shaped error response (asserting its shape)."""
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    if kind is not None:
        assert error["type"] == kind, error
    return str(error["message"])


def test_load_registers_and_serves_under_the_lora_name(app: App) -> None:
    r = app.load("support", app.adapter(1))
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'support' added successfully."
    assert r.headers["content-type"].startswith("text/plain")
    (version,) = app.registry.list("support")
    assert version.aliases == ("champion",)
    chat = app.chat("support")
    assert chat.status_code == 200 and chat.headers["x-tuneloop-served-by"] == version.short_ref
    # name@alias: another alias of the same adapter name
    assert app.load("support@canary", app.adapter(2)).status_code == 200
    canary = app.registry.get("support", "canary")
    assert app.chat("support@canary").headers["x-tuneloop-served-by"] == canary.short_ref
    models = {m["id"] for m in app.client.get("/v1/models").json()["data"]}
    assert {"support", "support@canary"} <= models


def test_loading_a_served_name_again_needs_load_inplace(app: App) -> None:
    assert app.load("support", app.adapter(1)).status_code == 200
    message = vllm_error(app.load("support", app.adapter(2)), 400, "InvalidUserInput")
    assert message.startswith("The lora adapter 'support' has already been loaded.")
    assert len(app.registry.list("support")) == 1  # nothing registered by the refused call
    r = app.load("support", app.adapter(2), load_inplace=True)
    assert r.status_code == 200, r.text
    new = app.registry.get("support", "champion")
    assert app.chat("support").headers["x-tuneloop-served-by"] == new.short_ref
    # the same weights again in place: nothing changes
    assert app.load("support", app.adapter(2), load_inplace=True).status_code == 200
    assert app.registry.get("support", "champion").version == new.version


def test_unload_removes_the_name_from_serving(app: App) -> None:
    assert app.load("support", app.adapter(1)).status_code == 200
    version = app.registry.get("support", "champion")
    r = app.unload("support")
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'support' removed successfully."
    assert app.chat("support").status_code == 404
    assert (
        vllm_error(app.unload("support"), 404, "NotFoundError")
        == "The lora adapter 'support' cannot be found."
    )
    vllm_error(app.unload("ghost"), 404, "NotFoundError")
    vllm_error(app.unload("Bad Name!"), 404, "NotFoundError")
    # name@version retires the version (nothing points at it any more); then it cannot be found
    assert app.unload(f"support@{version.version[:12]}").status_code == 200
    assert app.registry.list("support") == []
    # a version an alias points at cannot be retired
    assert app.load("billing", app.adapter(3)).status_code == 200
    billing = app.registry.get("billing", "champion")
    vllm_error(app.unload(f"billing@{billing.version[:12]}"), 409)


def test_errors_have_vllm_shape_and_register_nothing(app: App) -> None:
    folder = app.adapter(1)
    vllm_error(app.load("support", folder, token=None), 401)
    vllm_error(app.load("support", folder, token="wrong"), 401)
    vllm_error(app.unload("support", token=None), 401)
    assert "must be provided" in vllm_error(app.load("", folder), 400, "InvalidUserInput")
    assert "must be provided" in vllm_error(app.load("support", ""), 400, "InvalidUserInput")
    assert "base model" in vllm_error(app.load(BASE, folder), 400, "InvalidUserInput")
    assert "base model" in vllm_error(app.load("default", folder), 400, "InvalidUserInput")
    vllm_error(app.load("support@abcdef12", folder), 400, "InvalidUserInput")
    vllm_error(app.load("Bad Name!", folder), 400)
    outside = write_adapter(app.incoming.parent.parent / "elsewhere", base_model=BASE, seed=1)
    assert "import roots" in vllm_error(app.load("support", outside), 400)
    nan = app.adapter(
        2,
        tensor_overrides={
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.full((4, 16), np.nan, "f4")
        },
    )
    assert "NaN" in vllm_error(app.load("support", nan), 400)
    r = app.client.post(
        "/v1/load_lora_adapter", content=b"{not json", headers={"authorization": f"Bearer {TOKEN}"}
    )
    vllm_error(r, 400)
    assert app.registry.list(include_retired=True) == []
    assert app.chat(BASE).status_code == 200


def test_an_adapter_the_engine_refuses_is_rejected(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = app.engine.load_lora

    async def load(lora: LoRASpec) -> None:
        if lora.name.startswith("broken@"):
            raise EngineError("size mismatch for lora_A")
        await real_load(lora)

    monkeypatch.setattr(app.engine, "load_lora", load)
    folder = shutil.copytree(app.adapter(4), app.incoming / "broken")
    message = vllm_error(app.load("broken", folder), 409)
    assert "size mismatch" in message
    (version,) = app.registry.list("broken", include_retired=True)
    assert version.status == "rejected" and version.aliases == ()
    listed = app.client.get("/admin/adapters", headers={"authorization": f"Bearer {TOKEN}"}).json()["data"]
    assert listed == []
    listed = app.client.get("/admin/adapters?all=true", headers={"authorization": f"Bearer {TOKEN}"}).json()
    (row,) = listed["data"]
    assert row["status"] == "rejected" and "size mismatch" in row["rejected_reason"]
    assert app.chat("broken").status_code == 404
