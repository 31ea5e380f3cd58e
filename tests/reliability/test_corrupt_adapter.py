"""A corrupt adapter in the registry: the stored files of a registered version are damaged afterwards
(weights bytes changed in place, weights truncated, weights file missing, config garbage, whole version
folder gone). Real registry (SQLite) and artifact store on disk, real app over HTTP, FakeEngine.

Proves:
* moving an alias to the damaged version is refused with a clear 409 (`adapter_rejected`, naming the
  artifact check) - before the fix, changed bytes were loaded and served, and a missing folder made the
  replica's whole reconcile loop fail until the swap timed out (503);
* the alias keeps its previous version, which keeps serving;
* the base model and other adapters keep serving, with no 5xx for any unrelated request meanwhile;
* a replica that starts while the *champion's* files are damaged refuses that version only, becomes
  ready, and serves everything else.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from reliability_harness import BASE, LiveServer, adapter_folder, admin_headers, build_runtime, make_config

from serving.registry.artifacts import WEIGHTS_FILE
from serving.registry.testing import SMOLLM2_CONFIG, SMOLLM2_SHAPES, write_adapter

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


def flip_bytes(folder: Path) -> None:
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    weights.write_bytes(bytes(data))


def truncate(folder: Path) -> None:
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def garbage_config(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("{not json")


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "weights_bytes_changed": flip_bytes,
    "weights_truncated": truncate,
    "weights_missing": lambda folder: (folder / WEIGHTS_FILE).unlink(),
    "config_garbage": garbage_config,
    "folder_missing": shutil.rmtree,
}


class Background:
    """Unrelated traffic (base model + another adapter) in a thread; records every non-200."""

    def __init__(self, url: str, models: list[str]) -> None:
        self.url, self.models = url, models
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                model = self.models[self.sent % len(self.models)]
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
                r = client.post("/v1/chat/completions", json=body)
                self.sent += 1
                if r.status_code != 200:
                    self.errors.append(f"{model}: {r.status_code} {r.text[:200]}")

    def __enter__(self) -> Background:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.sent == 0 and time.monotonic() < deadline:  # traffic is flowing before the test acts
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_version_is_refused_and_the_alias_keeps_serving(
    corruption: str, tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    runtime = build_runtime(make_config(tmp_path / "home"))
    registry = runtime.registry
    v1 = registry.register(adapter_folder(tmp_path, 1), "support", alias="champion")
    billing = registry.register(adapter_folder(tmp_path, 5), "billing", alias="champion")
    v2 = registry.register(adapter_folder(tmp_path, 2), "support")
    server = live_server(runtime)
    CORRUPTIONS[corruption](Path(v2.uri))

    with Background(server.url, [BASE, "billing"]) as background:
        r = httpx.put(
            f"{server.url}/admin/adapters/support/aliases/champion",
            json={"version": v2.version},
            headers=admin_headers(),
            timeout=60,
        )
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "adapter_rejected" and "artifact check failed" in error["message"]
        server.call(runtime.core.reconcile)
        chat = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200 and chat.headers["x-tuneloop-served-by"] == v1.short_ref
    assert background.sent > 0 and background.errors == []
    assert registry.get("support", "champion").version == v1.version
    ready = httpx.get(f"{server.url}/ready").json()
    assert v1.ref in ready["loaded_adapters"] and billing.ref in ready["loaded_adapters"]
    assert v2.ref not in ready["loaded_adapters"]


def test_replica_starting_with_a_corrupt_champion_serves_everything_else(
    tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    first = build_runtime(make_config(tmp_path / "home"))
    v1 = first.registry.register(adapter_folder(tmp_path, 1), "support", alias="champion")
    billing = first.registry.register(adapter_folder(tmp_path, 5), "billing", alias="champion")
    first.db.dispose()
    first.request_log.close()
    flip_bytes(Path(v1.uri))

    runtime = build_runtime(make_config(tmp_path / "home"))
    server = live_server(runtime)  # becomes ready although one desired version is refused
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready["ready"] and billing.ref in ready["loaded_adapters"]
    assert "artifact check failed" in ready["failed_adapters"][v1.ref]
    for model in (BASE, "billing"):
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200, r.text
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code < 500 or r.status_code == 503, r.text  # refused explicitly, never served corrupt
    assert r.status_code != 200


# --------------------------------------------------------------------------- adapter fuzz over the admin API

Q = "base_model.model.model.layers.0.self_attn.q_proj"


def _fitting(folder: Path, seed: int = 0, **kwargs: Any) -> Path:
    kwargs.setdefault("target_modules", tuple(SMOLLM2_SHAPES))
    shapes = {**SMOLLM2_SHAPES, **kwargs.pop("shapes", {})}
    return write_adapter(folder, base_model=BASE, layers=1, module_shapes=shapes, seed=seed, **kwargs)


def _pickle_in_disguise(folder: Path) -> Path:
    import pickle

    _fitting(folder)
    (folder / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": 1}, protocol=4))
    return folder


def _symlinked(folder: Path) -> Path:
    _fitting(folder)
    (folder / "notes.txt").symlink_to("/etc/hostname")
    return folder


def _with_file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        _fitting(folder)
        (folder / name).write_bytes(content)
        return folder

    return make


def _huge_header(folder: Path) -> Path:
    _fitting(folder)
    (folder / WEIGHTS_FILE).write_bytes((2**40).to_bytes(8, "little") + b"{}")
    return folder


BAD_ADAPTERS: dict[str, Callable[[Path], Path]] = {
    # mismatched with the base (the case first: lora_A of the wrong width)
    "lora_A_wrong_width": lambda f: _fitting(f, shapes={"q_proj": (512, 576)}),
    "lora_B_wrong_height": lambda f: _fitting(f, shapes={"o_proj": (576, 512)}),
    "k_proj_with_query_heads": lambda f: _fitting(f, shapes={"k_proj": (576, 576)}),
    "mlp_wrong_intermediate": lambda f: _fitting(f, shapes={"down_proj": (2048, 576)}),
    "ranks_disagree": lambda f: _fitting(
        f, tensor_overrides={f"{Q}.lora_B.weight": np.zeros((576, 8), "f4")}
    ),
    "config_r_lies": lambda f: _fitting(f, config_overrides={"r": 8}),
    "one_dimensional": lambda f: _fitting(
        f, tensor_overrides={f"{Q}.lora_A.weight": np.zeros((2304,), "f4")}
    ),
    "lora_A_alone": lambda f: write_adapter(
        f, base_model=BASE, layers=0, tensor_overrides={f"{Q}.lora_A.weight": np.zeros((4, 576), "f4")}
    ),
    "rank_too_large": lambda f: _fitting(f, r=64),
    "unknown_module": lambda f: _fitting(f, target_modules=("q_proj", "c_attn")),
    "other_base": lambda f: write_adapter(
        f, base_model="meta-llama/Llama-3-8B", module_shapes=SMOLLM2_SHAPES
    ),
    "dora": lambda f: _fitting(f, config_overrides={"use_dora": True}),
    # malformed
    "nan_weights": lambda f: _fitting(
        f, tensor_overrides={f"{Q}.lora_A.weight": np.full((4, 576), np.nan, "f4")}
    ),
    "config_garbage": lambda f: garbage_config(_fitting(f)) or f,  # type: ignore[func-returns-value]
    "weights_truncated": lambda f: truncate(_fitting(f)) or f,  # type: ignore[func-returns-value]
    "weights_missing": lambda f: (_fitting(f) / WEIGHTS_FILE).unlink() or f,  # type: ignore[func-returns-value]
    "huge_header": _huge_header,
    "no_lora_tensors": lambda f: write_adapter(
        f, base_model=BASE, layers=0, tensor_overrides={"lm_head.weight": np.zeros((2, 2), "f4")}
    ),
    # hostile
    "pickle_file": _with_file("adapter_model.bin", b"\x80\x04K\x01."),
    "pickle_in_disguise": _pickle_in_disguise,
    "symlink": _symlinked,
}


def test_adapter_fuzz_registers_nothing_and_the_base_keeps_serving(
    tmp_path: Path, base_model: Path, live_server: Callable[..., LiveServer]
) -> None:
    import json

    (base_model / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))  # the base's shapes are known
    runtime = build_runtime(make_config(tmp_path / "home"))
    server = live_server(runtime)
    incoming = Path(runtime.config.resolved_registry_root()) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    answers: dict[str, tuple[int, str]] = {}
    with httpx.Client(base_url=server.url, headers=admin_headers(), timeout=30) as client:
        for case, make in sorted(BAD_ADAPTERS.items()):
            folder = make(incoming / case)
            for name in ("support", "billing"):
                r = client.post(
                    "/admin/adapters", json={"path": str(folder), "name": name, "alias": "champion"}
                )
                answers[f"{case}/{name}"] = (r.status_code, r.text[:300])
        for path in ("/", "/etc", str(tmp_path), str(incoming / "nope"), "x" * 5000, "\u0000"):
            r = client.post("/admin/adapters", json={"path": path, "name": "support"})
            answers[f"path {path[:20]!r}"] = (r.status_code, r.text[:300])
        chat = client.post(
            "/v1/chat/completions", json={"model": BASE, "messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 200, chat.text
        wrong = {case: a for case, a in answers.items() if not 400 <= a[0] < 500}
        assert not wrong, wrong
        shape_cases = [
            c for c in answers if c.split("/")[0] in {"lora_A_wrong_width", "mlp_wrong_intermediate"}
        ]
        assert all('"shape_mismatch"' in answers[c][1] for c in shape_cases), answers
        # nothing registered, not even as a rejected or retired version, and no artifacts left behind
        assert runtime.registry.list(include_retired=True) == []
        store = Path(runtime.config.resolved_registry_root())
        stored = [p for p in store.rglob("*") if p.is_file() and incoming not in p.parents]
        assert stored == []
        # a fitting adapter still registers and serves
        good = _fitting(incoming / "good", seed=3)
        r = client.post("/admin/adapters", json={"path": str(good), "name": "support", "alias": "champion"})
        assert r.status_code == 201, r.text
        chat = client.post(
            "/v1/chat/completions", json={"model": "support", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert chat.status_code == 200 and chat.headers["x-tuneloop-served-by"].startswith("support@")
        assert [v.name for v in runtime.registry.list(include_retired=True)] == ["support"]
