"""The real service end to end: `tuneloop serve` (Ray Serve + vLLM CPU) driven with the official
`openai` client; real peft adapters registered → routed → hot-swapped → rolled back; an experiment
split; bad input of every kind gets a 4xx and the service keeps serving."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

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
    with pytest.raises(openai.NotFoundError):  # v1 is no longer deployed
        chat(client, f"support@{v1['version'][:8]}")
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
