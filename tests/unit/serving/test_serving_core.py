"""Adapter lifecycle through the real HTTP app + registry (SQLite) on the fake engine:
register → route → hot-swap → rollback, experiments (sticky, shadow), refusal of bad adapters,
drain-before-unload, request logging and feedback, admin API auth."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from serving.config import ServingConfig
from serving.engine.fake import FakeEngine
from serving.hotswap import swap_alias
from serving.registry.errors import ConflictError
from serving.registry.testing import SMOLLM2_MODULES, write_adapter
from serving.runtime import ServingRuntime

BASE = "SmolLM2-135M-Instruct"
TOKEN = "admin-secret"


class Harness:
    def __init__(self, runtime: ServingRuntime, client: TestClient, engine: FakeEngine, tmp: Path) -> None:  # type: ignore[type-arg]
        self.runtime, self.client, self.engine, self.tmp = runtime, client, engine, tmp
        self.registry = runtime.registry

    def reconcile(self) -> None:
        self.client.blocking_portal.call(self.runtime.core.reconcile)

    def adapter(self, seed: int, **kw: Any) -> Path:
        return write_adapter(self.tmp / f"src-{seed}", base_model=BASE, seed=seed, **kw)

    def chat(self, model: str, user: str | None = None, **kw: Any) -> Any:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "where is my order?"}],
        }
        if user:
            body["user"] = user
        body.update(kw)
        return self.client.post("/v1/chat/completions", json=body)

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        return self.client.request(method, path, headers={"authorization": f"Bearer {TOKEN}"}, **kw)


@pytest.fixture()
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from _harness(tmp_path, monkeypatch, {"kind": "fake"})


@pytest.fixture()
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A replica that keeps at most 2 adapter versions resident (max_cpu_loras=2)."""
    yield from _harness(tmp_path, monkeypatch, {"kind": "fake", "max_loras": 1, "max_cpu_loras": 2})


def _harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_settings: dict[str, Any]
) -> Iterator[Harness]:
    model = tmp_path / "models" / BASE
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setattr("serving.runtime.resolve_base_model", lambda spec: model)
    monkeypatch.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
    monkeypatch.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
    config = ServingConfig(
        home=tmp_path / "home",
        engine=engine_settings,  # type: ignore[arg-type]
        admin_token=TOKEN,  # type: ignore[arg-type]
        poll_interval_s=0.05,
        swap_timeout_s=10,
    )
    engine = FakeEngine(BASE, max_model_len=256)
    rt = ServingRuntime.build(config, engine=engine, replica_id="r1")
    # what these tests check (cold versions, on-demand loads) would race a background preload of each
    # version they register; preloading has tests of its own
    rt.core.config.preload_new_versions = False
    with TestClient(rt.http_app()) as client:
        client.blocking_portal.call(rt.start)  # the reconcile task lives on the client's event loop
        yield Harness(rt, client, engine, tmp_path)
        client.blocking_portal.call(rt.close)


def test_register_alias_route_and_log(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    h.reconcile()
    assert h.engine.loaded and list(h.engine.loaded) == [v1.short_ref]
    r = h.chat("support")
    assert r.status_code == 200, r.text
    assert r.headers["x-tuneloop-served-by"] == v1.short_ref
    assert r.json()["model"] == v1.short_ref
    assert h.chat(f"support@{v1.version[:8]}").headers["x-tuneloop-served-by"] == v1.short_ref
    assert h.chat("support@champion").status_code == 200
    assert h.chat("support@nope").status_code == 404
    assert h.chat(BASE).headers["x-tuneloop-served-by"] == BASE
    models = {m["id"]: m for m in h.client.get("/v1/models").json()["data"]}
    assert {"support", "support@champion", BASE} <= set(models)
    assert models["support"]["version"] == v1.version
    h.runtime.request_log.flush(5)
    with h.runtime.db.session() as s:
        from sqlalchemy import text

        rows = s.execute(text("select served_name, served_version, status_code from requests")).all()
    assert ("support", v1.version, 200) in [tuple(r) for r in rows]
    assert any(r[2] == 404 for r in rows) is False  # 404s are refused before routing: not served, not logged


def test_hot_swap_loads_before_switch_and_rollback(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2 = h.registry.register(h.adapter(2), "support")
    h.reconcile()
    assert v2.short_ref not in h.engine.loaded  # not desired yet
    r = h.admin("PUT", "/admin/adapters/support/aliases/champion", json={"version": v2.version[:10]})
    assert r.status_code == 200, r.text
    assert r.json()["replicas"] == ["r1"] and r.json()["to_version"] == v2.version
    h.reconcile()
    assert h.chat("support").headers["x-tuneloop-served-by"] == v2.short_ref
    assert v1.short_ref not in h.engine.loaded  # drained and unloaded
    r = h.admin("POST", "/admin/adapters/support/rollback", json={"alias": "champion"})
    assert r.status_code == 200, r.text
    h.reconcile()
    assert h.chat("support").headers["x-tuneloop-served-by"] == v1.short_ref


def test_in_flight_request_keeps_its_version_until_drained(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2 = h.registry.register(h.adapter(2), "support")
    h.reconcile()
    h.engine.step_delay_s = 0.4  # the request stays in flight ≥ 4 s: far longer than a swap takes
    result: dict[str, Any] = {}

    def slow() -> None:
        result["r"] = h.chat("support", max_tokens=12)

    t = threading.Thread(target=slow)
    t.start()
    import time

    deadline = time.monotonic() + 5
    while h.runtime.core.inflight_total == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    swap_alias(h.registry, "support", "champion", v2.version, timeout_s=10)
    h.reconcile()
    assert v1.short_ref in h.engine.loaded  # still serving the in-flight request
    t.join(10)
    h.engine.step_delay_s = 0.0
    assert result["r"].status_code == 200
    assert result["r"].headers["x-tuneloop-served-by"] == v1.short_ref
    h.reconcile()
    assert v1.short_ref not in h.engine.loaded


def test_bad_adapter_is_refused_and_service_keeps_serving(h: Harness, tmp_path: Path) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    h.reconcile()
    v2 = h.registry.register(h.adapter(2), "support")
    h.engine.fail_generation_for.add(v2.short_ref)  # smoke generation fails for this version
    r = h.admin("PUT", "/admin/adapters/support/aliases/champion", json={"version": v2.version})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "adapter_rejected"
    assert "smoke" in r.json()["error"]["message"]
    h.reconcile()
    assert h.chat("support").headers["x-tuneloop-served-by"] == v1.short_ref
    # statically invalid adapters never get in: NaN weights, pickle files, other base, path outside roots
    import numpy as np

    nan = h.adapter(
        3,
        tensor_overrides={
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.full(
                (4, 16), np.nan, np.float32
            )
        },
    )
    incoming = Path(h.runtime.config.resolved_registry_root()) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.copytree(nan, incoming / "nan")
    r = h.admin("POST", "/admin/adapters", json={"path": str(incoming / "nan"), "name": "support"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "non_finite_weights"
    other = write_adapter(incoming / "other", base_model="meta-llama/Llama-3-8B", seed=4)
    r = h.admin("POST", "/admin/adapters", json={"path": str(other), "name": "support"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "base_model_mismatch"
    r = h.admin("POST", "/admin/adapters", json={"path": str(tmp_path / "src-1"), "name": "support"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed"
    r = h.admin("POST", "/admin/adapters", json={"path": str(incoming / ".." / ".." / "src-1"), "name": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed"
    good = shutil.copytree(h.adapter(5), incoming / "good")
    r = h.admin("POST", "/admin/adapters", json={"path": str(good), "name": "billing", "alias": "champion"})
    assert r.status_code == 201, r.text
    h.reconcile()
    assert h.chat("billing").status_code == 200


def test_admin_api_needs_its_own_token(h: Harness) -> None:
    assert h.client.get("/admin/adapters").status_code == 401
    assert h.client.get("/admin/adapters", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert h.admin("GET", "/admin/adapters").status_code == 200
    r = h.admin("PUT", "/admin/adapters/ghost/aliases/champion", json={"version": "abcdef12"})
    assert r.status_code == 404 and r.json()["error"]["type"]
    r = h.admin("PUT", "/admin/adapters/support/aliases/champion", json={"nope": 1})
    assert r.status_code == 400


def test_experiment_split_is_sticky_weighted_and_shadowed(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2 = h.registry.register(h.adapter(2), "support", alias="challenger")
    v3 = h.registry.register(h.adapter(3), "support", alias="shadowed")
    r = h.admin(
        "POST",
        "/admin/experiments",
        json={
            "name": "exp1",
            "arms": [
                {"model": "support@champion", "weight": 0.7},
                {"model": "support@challenger", "weight": 0.3},
            ],
            "shadow": "support@shadowed",
        },
    )
    assert r.status_code == 201, r.text
    h.reconcile()
    served: dict[str, str] = {}
    for i in range(60):
        user = f"user-{i}"
        resp = h.chat("exp1", user=user)
        assert resp.status_code == 200, resp.text
        served[user] = resp.headers["x-tuneloop-served-by"]
        assert resp.headers["x-tuneloop-experiment"] == "exp1"
    # sticky: same user → same arm, also via the header
    for user in list(served)[:10]:
        again = h.client.post(
            "/v1/chat/completions",
            headers={"x-tuneloop-user": user},
            json={"model": "exp1", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert again.headers["x-tuneloop-served-by"] == served[user]
    counts = {v1.short_ref: 0, v2.short_ref: 0}
    for ref in served.values():
        counts[ref] += 1
    assert counts[v1.short_ref] > counts[v2.short_ref] > 0
    assert v3.short_ref not in served.values()  # the shadow never answers clients
    h.runtime.request_log.flush(5)
    from sqlalchemy import text

    with h.runtime.db.session() as s:
        rows = s.execute(
            text("select arm, shadow_of, served_version from requests where experiment='exp1'")
        ).all()
    shadows = [r for r in rows if r[1] is not None]
    primaries = [r for r in rows if r[1] is None]
    assert len(primaries) == 70
    assert shadows and all(r[2] == v3.version for r in shadows)
    assert {r[0] for r in primaries} == {"support@champion", "support@challenger"}


def test_feedback_round_trip(h: Harness) -> None:
    rid = h.chat(BASE).json()["id"]
    r = h.client.post("/v1/feedback", json={"id": rid, "thumbs": 1, "correction": "better answer"})
    assert r.status_code == 200, r.text
    assert h.client.post("/v1/feedback", json={"id": "chatcmpl-unknown", "thumbs": 1}).status_code == 404
    assert h.client.post("/v1/feedback", json={"id": rid}).status_code == 400
    assert h.client.post("/v1/feedback", json={"id": rid, "rating": 7}).status_code == 400


def test_canary_experiment_intercepts_an_adapter_name(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2 = h.registry.register(h.adapter(2), "support", alias="challenger")
    r = h.admin(
        "POST",
        "/admin/experiments",
        json={
            "name": "support-canary",
            "intercept": "support",
            "arms": [
                {"model": "support@champion", "weight": 0.5},
                {"model": "support@challenger", "weight": 0.5},
            ],
        },
    )
    assert r.status_code == 201, r.text
    seen = {h.chat("support", user=f"u{i}").headers["x-tuneloop-served-by"] for i in range(30)}
    assert seen == {v1.short_ref, v2.short_ref}
    assert h.chat("support@champion").headers["x-tuneloop-served-by"] == v1.short_ref  # explicit refs bypass
    r = h.admin(
        "POST",
        "/admin/experiments",
        json={
            "name": "second",
            "intercept": "support",
            "arms": [
                {"model": "support@champion", "weight": 1},
                {"model": "support@challenger", "weight": 1},
            ],
        },
    )
    assert r.status_code == 409
    assert h.admin("POST", "/admin/experiments/support-canary/stop").status_code == 200
    assert {h.chat("support", user=f"u{i}").headers["x-tuneloop-served-by"] for i in range(10)} == {
        v1.short_ref
    }


def test_base_model_names_route_to_the_base(h: Harness) -> None:
    # one list (serving.router.base_names + the runtime's base_aliases) for the router and the registry
    for model in (BASE, "default", "base"):
        r = h.chat(model)
        assert r.status_code == 200, (model, r.text)
        assert r.headers["x-tuneloop-served-by"] == BASE
    with pytest.raises(ConflictError, match="base model's name"):
        h.registry.register(h.adapter(1), "default")


def test_version_the_engine_refuses_is_rejected_for_every_replica(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.engine.base import EngineError, LoRASpec

    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    h.reconcile()
    v2 = h.registry.register(h.adapter(2), "support")
    real_load = h.engine.load_lora
    attempts: list[str] = []

    async def load(lora: LoRASpec) -> None:
        attempts.append(lora.name)
        if lora.name == v2.short_ref:
            raise EngineError("size mismatch for lora_A: copying a param with shape [4, 512]")
        await real_load(lora)

    monkeypatch.setattr(h.engine, "load_lora", load)
    r = h.admin("PUT", "/admin/adapters/support/aliases/champion", json={"version": v2.version})
    assert r.status_code == 409 and r.json()["error"]["code"] == "adapter_rejected", r.text
    assert "size mismatch" in r.json()["error"]["message"]
    rejected = h.registry.get("support", v2.version)
    assert rejected.status == "rejected" and rejected.rejection is not None
    assert rejected.rejection["replica"] == "r1" and "engine refused" in rejected.rejection["reason"]
    h.reconcile()
    assert attempts.count(v2.short_ref) == 1  # refused once; no replica retries it
    assert h.registry.desired_set() == [h.registry.get("support", v1.version)]
    assert h.chat(f"support@{v2.version[:12]}").status_code == 404
    assert h.chat("support").headers["x-tuneloop-served-by"] == v1.short_ref
    assert h.registry.get("support", "champion").version == v1.version


# ------------------------------------------------------------------ on-demand versions, bounded residency


def _metric(h: Harness, name: str, **labels: str) -> float:
    """Sum of the samples of `name` (exactly) whose labels include `labels`."""
    total = 0.0
    for line in h.client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_any_active_version_is_served_on_demand(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2 = h.registry.register(h.adapter(2), "support")  # no alias, no experiment: not in the desired set
    h.reconcile()
    assert v2.short_ref not in h.engine.loaded
    r = h.chat(f"support@{v2.version[:8]}")
    assert r.status_code == 200, r.text
    assert r.headers["x-tuneloop-served-by"] == v2.short_ref
    assert v2.short_ref in h.engine.loaded and v2.ref in h.runtime.core.loaded_keys()
    # streamed, and the previous champion after a promotion, without inventing an alias
    swap_alias(h.registry, "support", "champion", v2.version)
    h.reconcile()
    r = h.chat(f"support@{v1.version[:12]}", stream=True)
    assert r.status_code == 200 and r.headers["x-tuneloop-served-by"] == v1.short_ref
    assert "[DONE]" in r.text
    assert _metric(h, "tuneloop_adapter_lookups_total", result="miss") >= 1
    assert _metric(h, "tuneloop_adapter_cold_load_seconds_count") >= 1
    # a retired version is not servable
    h.registry.remove("support", v1.version)
    h.reconcile()
    assert h.chat(f"support@{v1.version[:12]}").status_code == 404


def test_concurrent_requests_for_a_cold_version_trigger_one_load(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from serving.engine.base import GenerationRequest, LoRASpec, SamplingSettings

    v2 = h.registry.register(h.adapter(2), "support")
    h.reconcile()
    real_load = h.engine.load_lora
    loads: list[str] = []

    async def slow_load(lora: LoRASpec) -> None:
        loads.append(lora.name)
        await asyncio.sleep(0.2)
        await real_load(lora)

    monkeypatch.setattr(h.engine, "load_lora", slow_load)
    core = h.runtime.core
    target, _ = core.route(f"support@{v2.version[:12]}", None)
    assert target.version is not None and target.version.path == ""  # cold: not even fetched yet

    async def burst() -> list[int]:
        request = GenerationRequest(
            "r", SamplingSettings(), prompt="hello", lora=target.version.lora() if target.version else None
        )
        return list(await asyncio.gather(*(core.engine.count_prompt_tokens(request) for _ in range(12))))

    counts = h.client.blocking_portal.call(burst)
    assert len(counts) == 12 and len(set(counts)) == 1
    assert loads == [v2.short_ref]  # one load for twelve requests
    assert h.engine.loaded[v2.short_ref].path == str(h.registry.local_path(v2))
    assert _metric(h, "tuneloop_adapter_loads_total", kind="on_demand") == 1


def test_residency_is_bounded_lru_and_pins_what_aliases_and_experiments_use(small: Harness) -> None:
    h = small
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    others = [h.registry.register(h.adapter(seed), "support") for seed in (2, 3, 4)]
    h.reconcile()
    core = h.runtime.core
    assert core.loaded_keys() == [v1.ref]

    def ask(version: Any) -> None:
        r = h.chat(f"support@{version.version[:12]}")
        assert r.status_code == 200 and r.headers["x-tuneloop-served-by"] == version.short_ref, r.text

    v2, v3, v4 = others
    ask(v2)
    assert set(core.loaded_keys()) == {v1.ref, v2.ref}
    ask(v3)  # full: v2 (least recently used, unpinned, idle) makes room; the champion stays
    assert set(core.loaded_keys()) == {v1.ref, v3.ref} and set(h.engine.loaded) == {
        v1.short_ref,
        v3.short_ref,
    }
    ask(v3)
    ask(v1)
    ask(v2)
    assert set(core.loaded_keys()) == {v1.ref, v2.ref}
    assert _metric(h, "tuneloop_adapter_evictions_total", reason="lru") == 2
    assert _metric(h, "tuneloop_adapter_lookups_total", result="hit") == 2  # v3 again, v1
    assert _metric(h, "tuneloop_adapter_lookups_total", result="miss") == 3
    assert _metric(h, "tuneloop_adapter_capacity") == 2
    assert _metric(h, "tuneloop_loaded_adapters") == 2
    # an experiment pins its arms: with both slots pinned, a third version cannot load (503, no eviction)
    h.registry.create_experiment("ab", [(f"support@{v3.version[:12]}", 1.0), ("support@champion", 1.0)])
    h.reconcile()
    assert set(core.loaded_keys()) == {v1.ref, v3.ref}
    assert _metric(h, "tuneloop_adapter_pinned") == 2
    core.config.slot_wait_s = 0.2
    r = h.chat(f"support@{v4.version[:12]}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_slots_busy", r.text
    assert set(core.loaded_keys()) == {v1.ref, v3.ref}
    assert h.chat("ab", user="u1").status_code == 200
    # the experiment stops: its arm is released, v4 can load
    h.registry.stop_experiment("ab")
    h.reconcile()
    ask(v4)
    assert set(core.loaded_keys()) == {v1.ref, v4.ref}


def test_engine_evictions_are_reflected(small: Harness) -> None:
    v1 = small.registry.register(small.adapter(1), "support", alias="champion")
    v2 = small.registry.register(small.adapter(2), "support")
    small.reconcile()
    assert small.chat(f"support@{v2.version[:12]}").status_code == 200
    del small.engine.loaded[v2.short_ref]  # the engine's own LRU dropped it
    small.client.blocking_portal.call(small.runtime.core._sync_engine_evictions)
    assert small.runtime.core.loaded_keys() == [v1.ref]
    assert _metric(small, "tuneloop_adapter_evictions_total", reason="engine") == 1
    assert small.chat(f"support@{v2.version[:12]}").status_code == 200  # loads again on demand
    assert v2.short_ref in small.engine.loaded


def test_the_engine_is_asked_what_it_holds_only_after_a_load_or_a_slow_refresh(
    small: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each question keeps vLLM's worker busy-polling for a second, so an idle replica must not ask."""
    core = small.runtime.core
    asked: list[int] = []
    real = small.engine.list_loras

    async def counting() -> list[str]:
        asked.append(1)
        return await real()

    monkeypatch.setattr(small.engine, "list_loras", counting)

    def check() -> None:
        small.client.blocking_portal.call(core._check_engine_evictions)

    v1 = small.registry.register(small.adapter(1), "support", alias="champion")
    small.reconcile()  # a load: the next check asks
    check()
    n = len(asked)
    assert n >= 1
    for _ in range(3):
        check()  # nothing loaded or evicted since the clean answer: not asked
    assert len(asked) == n
    v2 = small.registry.register(small.adapter(2), "support")
    small.reconcile()  # routable now, not loaded
    check()
    assert len(asked) == n
    assert small.chat(f"support@{v2.version[:12]}").status_code == 200  # an on-demand load
    check()
    assert len(asked) > n
    n = len(asked)
    check()
    assert len(asked) == n
    core.config.engine_check_refresh_s = 0.0  # the refresh is due: asked although nothing changed
    check()
    assert len(asked) > n
    assert core.loaded_keys() == [v1.ref, v2.ref]


def test_smoke_generations_run_ahead_of_client_requests(small: Harness) -> None:
    from serving.engine.base import CONTROL_PRIORITY

    v1 = small.registry.register(small.adapter(1), "support", alias="champion")
    small.reconcile()  # a pinned version: loaded and smoke-tested
    assert small.chat("support").status_code == 200
    smoke = [r for r in small.engine.requests if r.request_id.startswith("smoke-")]
    clients = [r for r in small.engine.requests if not r.request_id.startswith("smoke-")]
    assert smoke and all(r.priority == CONTROL_PRIORITY < 0 for r in smoke)
    assert smoke[0].lora is not None and smoke[0].lora.name == v1.short_ref
    assert clients and all(r.priority == 0 for r in clients)


def test_a_pinned_version_the_engine_evicted_is_reloaded_by_the_next_poll(small: Harness) -> None:
    v1 = small.registry.register(small.adapter(1), "support", alias="champion")
    small.reconcile()
    core = small.runtime.core
    del small.engine.loaded[v1.short_ref]  # the engine dropped the champion on its own
    small.client.blocking_portal.call(core._sync_engine_evictions)
    assert core.loaded_keys() == []
    # same registry generation: only the missing pinned version makes the poll reconcile
    assert small.client.blocking_portal.call(core.reconcile) is True
    assert core.loaded_keys() == [v1.ref] and v1.short_ref in small.engine.loaded
    assert small.client.blocking_portal.call(core.reconcile) is False  # nothing missing: no work


def test_a_request_for_a_pinned_version_the_engine_evicted_loads_it_even_beyond_the_bound(
    small: Harness,
) -> None:
    """More pinned versions than slots (3 champions, 2 slots): the engine's own LRU drops one; a request
    for it before the next poll loads it as a pinned version (past the bound), not as an on-demand one
    that waits for a slot no pin ever frees and then answers 503 (what CI caught)."""
    core = small.runtime.core
    core.config.slot_wait_s = 0.2
    versions = [small.registry.register(small.adapter(i), f"team{i}", alias="champion") for i in (1, 2, 3)]
    small.reconcile()
    assert len(core.loaded_keys()) == 3  # pinned beyond max_resident=2
    del small.engine.loaded[versions[0].short_ref]  # the engine dropped one on its own
    small.client.blocking_portal.call(core._sync_engine_evictions)
    r = small.chat("team1")
    assert r.status_code == 200, r.text
    assert r.headers["x-tuneloop-served-by"] == versions[0].short_ref
    assert versions[0].short_ref in small.engine.loaded


def test_a_cold_version_that_fails_to_load_is_rejected_with_a_clear_error(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.engine.base import EngineError, LoRASpec

    h.registry.register(h.adapter(1), "support", alias="champion")
    bad = h.registry.register(h.adapter(2), "support")
    h.reconcile()
    real_load = h.engine.load_lora

    async def load(lora: LoRASpec) -> None:
        if lora.name == bad.short_ref:
            raise EngineError("size mismatch for lora_B")
        await real_load(lora)

    monkeypatch.setattr(h.engine, "load_lora", load)
    r = h.chat(f"support@{bad.version[:12]}", stream=True)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "adapter_rejected" and "size mismatch" in r.json()["error"]["message"]
    assert h.registry.get("support", bad.version).status == "rejected"
    h.reconcile()
    assert h.chat(f"support@{bad.version[:12]}").status_code == 404
    assert h.chat("support").status_code == 200


def test_a_version_serving_requests_is_never_evicted(small: Harness) -> None:
    h = small
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2, v3 = (h.registry.register(h.adapter(seed), "support") for seed in (2, 3))
    h.reconcile()
    core = h.runtime.core
    assert h.chat(f"support@{v2.version[:12]}").status_code == 200
    target, _ = core.route(f"support@{v2.version[:12]}", None)
    core.config.slot_wait_s = 0.3
    with core.lease(target):  # a request on v2 is in flight: the only unpinned slot is busy
        r = h.chat(f"support@{v3.version[:12]}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_slots_busy", r.text
        assert set(core.loaded_keys()) == {v1.ref, v2.ref}
    core.config.slot_wait_s = 5.0
    r = h.chat(f"support@{v3.version[:12]}")  # v2 drained: it makes room
    assert r.status_code == 200 and r.headers["x-tuneloop-served-by"] == v3.short_ref
    assert set(core.loaded_keys()) == {v1.ref, v3.ref}


def test_a_version_registered_while_serving_is_preloaded_into_a_free_slot_and_swaps_without_a_load(
    small: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.engine.base import LoRASpec
    from serving.testing import wait_until

    h, core = small, small.runtime.core
    core.config.preload_new_versions = True  # the product's default
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    h.reconcile()
    loads: list[str] = []
    real_load = h.engine.load_lora

    async def load(lora: LoRASpec) -> None:
        loads.append(lora.name)
        await real_load(lora)

    monkeypatch.setattr(h.engine, "load_lora", load)
    v2 = h.registry.register(h.adapter(2), "support")  # no alias: nothing asks for it yet
    h.reconcile()
    wait_until(lambda: v2.ref in core.loaded_keys())  # loaded in the background into the free slot...
    assert v2.ref in core._adapters.smoked  # ...and smoke-tested, as a swap would
    assert _metric(h, "tuneloop_adapter_loads_total", kind="preload") == 1
    v3 = h.registry.register(h.adapter(3), "support")  # both slots taken: no preload, nothing evicted
    h.reconcile()
    time.sleep(0.2)
    assert sorted(core.loaded_keys()) == sorted([v1.ref, v2.ref]) and loads == [v2.short_ref]
    r = h.admin("PUT", "/admin/adapters/support/aliases/champion", json={"version": v2.version})
    assert r.status_code == 200, r.text
    h.reconcile()
    assert h.chat("support").headers["x-tuneloop-served-by"] == v2.short_ref
    assert loads == [v2.short_ref]  # the swap found it resident: no load, no smoke
    assert h.chat(f"support@{v3.version[:12]}").status_code == 200  # v3 still loads on demand


def test_a_preloaded_version_the_engine_refuses_is_rejected_before_anything_routes_to_it(
    small: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.engine.base import EngineError, LoRASpec
    from serving.testing import wait_until

    h = small
    h.runtime.core.config.preload_new_versions = True
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    h.reconcile()
    real_load = h.engine.load_lora

    async def load(lora: LoRASpec) -> None:
        if lora.name != v1.short_ref:
            raise EngineError("size mismatch for lora_A")
        await real_load(lora)

    monkeypatch.setattr(h.engine, "load_lora", load)
    v2 = h.registry.register(h.adapter(2), "support")
    h.reconcile()
    wait_until(lambda: h.registry.get("support", v2.version).status == "rejected")
    r = h.admin("PUT", "/admin/adapters/support/aliases/champion", json={"version": v2.version})
    assert r.status_code == 409 and r.json()["error"]["code"] == "adapter_rejected", r.text
    assert h.chat("support").headers["x-tuneloop-served-by"] == v1.short_ref


def test_cold_versions_are_fetched_from_a_remote_store_only_when_requested(
    make_registry: Any, new_adapter: Any, tmp_path: Path
) -> None:
    import asyncio
    import uuid

    from serving.core import CoreConfig, ServingCore
    from serving.registry.testing import SMOLLM2_BASE
    from serving.registry_source import RegistrySource

    registry = make_registry(f"memory://tuneloop-{uuid.uuid4().hex[:8]}")
    v1 = registry.register(new_adapter(1), "support", alias="champion")
    v2 = registry.register(new_adapter(2), "support")
    engine = FakeEngine(SMOLLM2_BASE, max_model_len=256)

    async def run() -> None:
        core = ServingCore(
            engine, RegistrySource(registry), CoreConfig(base_id=SMOLLM2_BASE, max_resident=2), replica_id="r"
        )
        await core.start()
        try:
            assert core.loaded_keys() == [v1.ref]
            cache = tmp_path / "cache"
            assert not (cache / "support" / v2.version).exists()  # not downloaded until asked for
            target, _ = core.route(f"support@{v2.version[:12]}", None)
            assert target.version is not None and target.version.path == ""
            spec = await core.ensure_resident(target.version.lora())
            assert spec.path == str(cache / "support" / v2.version)
            assert engine.loaded[v2.short_ref].path == spec.path
            assert sorted(core.loaded_keys()) == sorted([v1.ref, v2.ref])
        finally:
            await core.shutdown()

    asyncio.run(run())


def test_making_room_sends_the_unload_ahead_of_the_load_without_waiting_for_it(
    make_registry: Any, new_adapter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine answers control calls between two steps: the LRU eviction's unload is sent first, and the
    load that needed the room goes out right behind it instead of one step later."""
    import uuid

    from serving.core import CoreConfig, ServingCore
    from serving.registry.testing import SMOLLM2_BASE
    from serving.registry_source import RegistrySource

    registry = make_registry(f"memory://tuneloop-{uuid.uuid4().hex[:8]}")
    v1 = registry.register(new_adapter(1), "support", alias="champion")
    v2, v3 = (registry.register(new_adapter(seed), "support") for seed in (2, 3))
    engine = FakeEngine(SMOLLM2_BASE, max_model_len=256)
    calls: list[str] = []
    unload_answered = asyncio.Event()
    original_load, original_unload = FakeEngine.load_lora, FakeEngine.unload_lora

    async def load(self: FakeEngine, lora: Any) -> None:
        calls.append(f"load {lora.name}")
        await original_load(self, lora)

    async def unload(self: FakeEngine, lora: Any) -> None:
        calls.append(f"unload {lora.name}")
        await unload_answered.wait()  # the engine answers at its next step boundary
        await original_unload(self, lora)

    monkeypatch.setattr(FakeEngine, "load_lora", load)
    monkeypatch.setattr(FakeEngine, "unload_lora", unload)

    async def run() -> None:
        core = ServingCore(
            engine, RegistrySource(registry), CoreConfig(base_id=SMOLLM2_BASE, max_resident=2), replica_id="r"
        )
        await core.start()
        try:
            for version in (v2, v3):  # v3 needs v2's slot
                target, _ = core.route(f"support@{version.version[:12]}", None)
                assert target.version is not None
                await asyncio.wait_for(core.ensure_resident(target.version.lora()), 5)
            assert calls == [
                f"load {v1.short_ref}",
                f"load {v2.short_ref}",
                f"unload {v2.short_ref}",
                f"load {v3.short_ref}",
            ]
            assert sorted(core.loaded_keys()) == sorted([v1.ref, v3.ref])  # while v2's unload is pending
            assert v2.short_ref in engine.loaded
            unload_answered.set()
        finally:
            await core.shutdown()  # waits for the pending unload
        assert v2.short_ref not in engine.loaded and v3.short_ref in engine.loaded

    asyncio.run(run())


def test_a_replica_busy_loading_keeps_its_heartbeat(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load that takes long (an engine busy with client traffic) must not make the replica look dead:
    a hot-swap would then skip it and move the alias before it has the version."""
    release = threading.Event()
    original = FakeEngine.load_lora

    async def slow_load(self: FakeEngine, lora: Any) -> None:
        while not release.is_set():
            await asyncio.sleep(0.05)
        await original(self, lora)

    monkeypatch.setattr(FakeEngine, "load_lora", slow_load)
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")  # the poll loop starts loading it
    try:
        seen = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            (replica,) = h.registry.live_replicas(2.0)
            seen.append(replica.heartbeat_at)
            time.sleep(0.5)
        assert len(set(seen)) >= 3, seen  # the heartbeat went on (every 1 s) while the load hung
        assert v1.ref not in replica.loaded  # and it does not claim what it has not loaded
    finally:
        release.set()
    h.reconcile()
    assert h.chat("support").headers["x-tuneloop-served-by"] == v1.short_ref


# ----------------------------------------------------------------- adapter-aware routing (serving.multiplex)
def test_routing_ids_and_the_residency_report_follow_what_the_replica_holds(small: Harness) -> None:
    """What a replica reports to Serve's router is exactly its residency: pinned and on-demand versions,
    minus what its LRU or the engine evicted; pushed only when it changed."""
    from serving.multiplex import ResidencyReporter

    h, core = small, small.runtime.core
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2, v3 = (h.registry.register(h.adapter(seed), "support") for seed in (2, 3))
    h.reconcile()
    pushed: list[list[str]] = []
    reporter = ResidencyReporter(core.routing_ids, pushed.append)
    assert reporter.report() and pushed == [[v1.short_ref]]
    assert not reporter.report()  # unchanged: nothing pushed
    assert h.chat(f"support@{v2.version[:12]}").status_code == 200
    assert reporter.report() and pushed[-1] == sorted([v1.short_ref, v2.short_ref])
    assert h.chat(f"support@{v3.version[:12]}").status_code == 200  # the LRU evicts v2, never the pin
    assert reporter.report() and pushed[-1] == sorted([v1.short_ref, v3.short_ref])
    del h.engine.loaded[v3.short_ref]  # vLLM's own LRU dropped it
    h.client.blocking_portal.call(core._sync_engine_evictions)
    assert reporter.report() and pushed[-1] == [v1.short_ref]
    assert len(pushed) == 4


def test_residency_reporter_runs_on_its_own_and_survives_a_failing_push(h: Harness) -> None:
    from serving.multiplex import ResidencyReporter

    ids = [["a@000000000001"]]
    pushed: list[list[str]] = []
    failures = [RuntimeError("controller away")]

    def publish(value: list[str]) -> None:
        if failures:
            raise failures.pop()
        pushed.append(value)

    reporter = ResidencyReporter(lambda: list(ids[-1]), publish, interval_s=0.01, refresh_s=0.2)

    async def run() -> None:
        reporter.start()
        await asyncio.sleep(0.1)  # the first push failed and was retried
        ids.append(["a@000000000001", "b@000000000002"])
        await asyncio.sleep(0.5)  # the change, then at least one refresh of the same ids
        await reporter.stop()

    h.client.blocking_portal.call(run)
    assert pushed[0] == ["a@000000000001"] and pushed[1] == ["a@000000000001", "b@000000000002"]
    assert len(pushed) >= 3 and pushed[-1] == pushed[1]


def test_a_routing_header_that_contradicts_the_model_is_refused(h: Harness) -> None:
    v1 = h.registry.register(h.adapter(1), "support", alias="champion")
    v2 = h.registry.register(h.adapter(2), "support")
    h.reconcile()

    def chat(model: str, header: str | None, name: str = "serve_multiplexed_model_id") -> Any:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        headers = {name: header} if header is not None else {}
        return h.client.post("/v1/chat/completions", json=body, headers=headers)

    v2_id = v2.short_ref
    for model, header in [
        (f"support@{v2.version}", v2_id),  # the canonical id of the version the body names
        (f"support@{v2.version[:8]}", v2_id),
        (v2_id, v2_id),
        ("support", "support@champion"),  # an alias header naming the same version
        ("support", v1.short_ref),
        (BASE, "base"),
        ("support", None),  # no header: as before
    ]:
        r = chat(model, header)
        assert r.status_code == 200, (model, header, r.text)
        assert r.headers["x-tuneloop-replica"] == "r1"
    r = chat(v2_id, v2_id, name="serve-multiplexed-model-id")  # the spelling proxies turn it into
    assert r.status_code == 200, r.text
    for model, header in [
        ("support", v2_id),  # the champion is v1
        (f"support@{v2.version[:8]}", v1.short_ref),
        (v2_id, "support@000000000000"),  # names nothing
        (BASE, v2_id),
    ]:
        for name in ("serve_multiplexed_model_id", "serve-multiplexed-model-id"):
            r = chat(model, header, name)
            assert r.status_code == 400, (model, header, r.text)
            error = r.json()["error"]
            assert error["code"] == "routing_header_mismatch", r.text
            assert error["param"] == "serve_multiplexed_model_id"
            assert "serve_multiplexed_model_id" in error["message"] and header in error["message"]
    assert chat("nope@0123456789ab", v2_id).status_code == 404  # the body names nothing: its own error
    # an experiment's arm is chosen per request: the header may only name the experiment itself
    h.registry.create_experiment("ab", [(f"support@{v2.version[:12]}", 1.0), ("support@champion", 1.0)])
    h.reconcile()
    assert chat("ab", "ab").status_code == 200
    assert chat("ab", v2_id).status_code == 400


def test_routing_ids_clients_send_match_what_replicas_report() -> None:
    """tuneloop's clients (evals) derive the header from the model name by the rule the server names
    versions with (`VersionRef.short`, what a replica reports)."""
    from evals.client import routing_id as client_routing_id
    from serving.multiplex import routing_header
    from serving.router import VersionRef

    version = "0123456789abcdef" * 4
    assert client_routing_id(f"support@{version}") == VersionRef("support", version, "/x").short
    cases = {
        f"support@{version}": "support@0123456789ab",
        f"support@{version[:12].upper()}": "support@0123456789ab",
        f"support@{version[:12]}": "support@0123456789ab",
        f"support@{version[:11]}": None,  # a short prefix: the client cannot know the canonical id
        "support@champion": None,
        "support": None,
        BASE: None,
        f"support@{version}0": None,
        f"@{version}": None,
    }
    for model, expected in cases.items():
        assert client_routing_id(model) == expected, model
    assert routing_header({"serve_multiplexed_model_id": " a@1 "}) == "a@1"
    assert routing_header({"serve-multiplexed-model-id": "a@1"}) == "a@1"
    assert routing_header({"serve_multiplexed_model_id": " "}) is None
    assert routing_header({}) is None


def test_the_private_ray_names_the_residency_report_relies_on_exist() -> None:
    """`serving.multiplex.serve_publisher` reaches into Ray Serve (the channel `@serve.multiplexed` uses):
    an upgrade of ray[serve] that renames it fails here, not silently in production."""
    import dataclasses as dc

    from ray.serve._private.client import ServeControllerClient
    from ray.serve._private.common import RequestRoutingInfo
    from ray.serve.context import _get_global_client

    assert callable(_get_global_client)
    assert callable(ServeControllerClient.record_request_routing_info)
    fields = {f.name for f in dc.fields(RequestRoutingInfo)}
    assert {"replica_id", "multiplexed_model_ids"} <= fields
