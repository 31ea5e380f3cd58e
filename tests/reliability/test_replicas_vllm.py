"""Two real model replicas (Ray Serve + vLLM on CPU, one engine each) sharing one registry:

- an adapter registered once is reconciled onto both replicas (each reports it loaded);
- with Ray Serve's `serve_multiplexed_model_id` header, a request for an on-demand version goes to a
  replica that holds it, so the two replicas hold different versions (adapter-aware routing);
- a replica killed with SIGKILL under load is restarted by Serve and reloads the same adapter; requests
  that were in flight on the killed replica are the only client-visible failures (counted, explained);
  none fail once the restarted replica reports in;
- SIGTERM drains: streams in flight when the service is told to stop finish with a finish_reason.

Heavy (two vLLM engines on 2 cores): marked `multireplica`; `scripts/test.sh` runs it in its own pytest
session after the rest so the suite's single-replica service is gone by then.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from serving.testing import Service, ServiceStartError, launch_service, make_peft_adapter

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.multireplica]

CLIENTS = 6
PROMPT = "Say something about lamps."


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from serving.models import prepare_default_model

    home = tmp_path_factory.mktemp("two-replicas")
    try:
        with launch_service(home, prepare_default_model(), num_replicas=2) as svc:
            yield svc
    except ServiceStartError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def adapter_version(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    src = make_peft_adapter(
        service.base_model_path, tmp_path_factory.mktemp("a") / "a", seed=3, lora_b_std=None
    )
    incoming = Path(shutil.copytree(src, service.home / "registry" / "incoming" / "support-a"))
    r = httpx.post(
        f"{service.url}/admin/adapters",
        json={"path": str(incoming), "name": "support", "alias": "champion"},
        headers=service.admin_headers(),
        timeout=600,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["adapter"]["version"])


def replicas(service: Service) -> list[dict[str, Any]]:
    r = httpx.get(f"{service.url}/admin/replicas", headers=service.admin_headers(), timeout=30)
    r.raise_for_status()
    return list(r.json()["data"])


def loaded_on(rep: dict[str, Any]) -> set[str]:
    return {str(x).split("@")[-1] for x in rep.get("loaded", [])}


def wait_for(predicate: Any, timeout_s: float, what: str, state: Any = None) -> Any:
    """Poll `predicate` until it returns something truthy (HTTP errors count as not yet); on timeout the
    error shows `state()` (e.g. what each replica reports) when given."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    if state is not None:
        try:
            last = state()
        except httpx.HTTPError as exc:
            last = repr(exc)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s (last: {last})")


def with_adapter(service: Service, version: str) -> list[dict[str, Any]]:
    return [r for r in replicas(service) if version[:12] in {v[:12] for v in loaded_on(r)}]


def replica_processes(service: Service) -> list[psutil.Process]:
    """The Serve replica actor processes of this service (descendants of its `tuneloop serve`)."""
    out = []
    for p in psutil.Process(service.process.pid).children(recursive=True):
        try:
            if "ServeReplica:tuneloop" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def engine_processes(service: Service) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if "VLLM::EngineCore" in (p.info["name"] or "") + " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


@dataclass
class Load:
    url: str
    model: str
    stop: threading.Event = field(default_factory=threading.Event)
    ok: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, served_by)
    failed: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, error)

    def client(self) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 24,
            "temperature": 0,
            "stream": True,
        }
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    with http.stream("POST", f"{self.url}/v1/chat/completions", json=body) as r:
                        if r.status_code != 200:
                            r.read()
                            raise RuntimeError(f"{r.status_code} {r.text[:200]}")
                        finish = None
                        for line in r.iter_lines():
                            if line.startswith("data: {"):
                                chunk = json.loads(line[6:])
                                if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
                                    finish = chunk["choices"][0]["finish_reason"]
                        if finish is None:
                            raise RuntimeError("stream ended without a finish_reason")
                        self.ok.append((start, time.monotonic(), r.headers.get("x-tuneloop-served-by", "")))
                except Exception as exc:  # noqa: BLE001 - every failure is counted and explained
                    self.failed.append((start, time.monotonic(), repr(exc)[:300]))
                    time.sleep(0.2)


def test_adapter_reconciles_on_both_replicas(service: Service, adapter_version: str) -> None:
    both = wait_for(
        lambda: reps if len(reps := with_adapter(service, adapter_version)) >= 2 else None,
        240,
        "both replicas report the adapter loaded",
        state=lambda: replicas(service),
    )
    assert len({r["replica_id"] for r in both}) == 2
    served = set()
    for _ in range(12):
        r = httpx.post(
            f"{service.v1}/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        served.add(r.headers["x-tuneloop-served-by"])
    assert served == {f"support@{adapter_version[:12]}"}


ROUTING_HEADER = "serve_multiplexed_model_id"


def lookups(service: Service) -> dict[tuple[str, str], float]:
    """(replica, hit|miss) -> `tuneloop_adapter_lookups_total`, from both replicas' `/metrics` (the proxy
    answers each scrape from one replica: scrape until both were seen)."""
    seen: dict[str, dict[tuple[str, str], float]] = {}
    for _ in range(40):
        counts: dict[tuple[str, str], float] = {}
        replica = None
        for line in httpx.get(f"{service.url}/metrics", timeout=30).text.splitlines():
            match = re.match(r"^tuneloop_adapter_lookups_total\{(.*)\} (\S+)$", line)
            if match:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
                replica = labels["replica"]
                counts[(replica, labels["result"])] = float(match[2])
        if replica is not None:
            seen[replica] = counts
        if len(seen) >= 2:
            break
    assert len(seen) == 2, f"saw the metrics of {sorted(seen)} only"
    return {k: v for counts in seen.values() for k, v in counts.items()}


def misses_since(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> int:
    return int(sum(v - before.get(k, 0.0) for k, v in after.items() if k[1] == "miss"))


def test_routing_header_sends_a_version_to_a_replica_holding_it(
    service: Service, adapter_version: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With `serve_multiplexed_model_id: name@<12 hex>` the proxy sends each request to a replica that
    holds that version (a cold one to the replica holding fewest), so the two replicas hold different
    versions: 4 on-demand versions fit in their 2 x 3 free slots (max_loras 4, the champion pinned on both)
    where one replica's 3 could not hold them all. Hit rates with and without the header are printed."""
    wait_for(
        lambda: len(with_adapter(service, adapter_version)) >= 2,
        240,
        "both replicas report the champion",
        state=lambda: replicas(service),
    )
    versions = []
    for seed in range(10, 14):
        src = make_peft_adapter(service.base_model_path, tmp_path_factory.mktemp("t") / "t", seed=seed)
        incoming = Path(shutil.copytree(src, service.home / "registry" / "incoming" / f"tenant-{seed}"))
        r = httpx.post(
            f"{service.url}/admin/adapters",
            json={"path": str(incoming), "name": "tenant"},  # no alias: served on demand, never pinned
            headers=service.admin_headers(),
            timeout=600,
        )
        assert r.status_code == 201, r.text
        versions.append(f"tenant@{r.json()['adapter']['version'][:12]}")

    def ask(version: str, header: bool) -> str:
        body = {"model": version, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        headers = {ROUTING_HEADER: version} if header else {}
        r = httpx.post(f"{service.v1}/chat/completions", json=body, headers=headers, timeout=300)
        assert r.status_code == 200, r.text
        assert r.headers["x-tuneloop-served-by"] == version
        return str(r.headers["x-tuneloop-replica"])

    def holdings() -> dict[str, set[str]]:
        return {
            rep["replica_id"]: {
                f"tenant@{v.split('@')[-1][:12]}" for v in rep["loaded"] if v.startswith("tenant@")
            }
            for rep in replicas(service)
        }

    # with the header, from cold: one pass loads each version once, then every request finds it
    start = lookups(service)
    for version in versions:
        ask(version, header=True)
        time.sleep(1.0)  # the replica's report reaches the proxy (pushed within 0.1 s of a change)
    time.sleep(2.5)  # heartbeats: /admin/replicas shows what each replica holds
    held = holdings()
    warm = lookups(service)
    rounds = 3
    served_by_holder = 0
    for _ in range(rounds):
        for version in versions:
            replica = ask(version, header=True)
            served_by_holder += version in held.get(replica, set())
    after_header = lookups(service)
    # without the header, the same requests from the state the header left
    for _ in range(rounds):
        for version in versions:
            ask(version, header=False)
    after_plain = lookups(service)
    n = rounds * len(versions)
    report = {
        "held_after_warmup": {k: sorted(v) for k, v in held.items()},
        "cold_loads_warmup": misses_since(start, warm),
        "with_header": {
            "requests": n,
            "misses": misses_since(warm, after_header),
            "by_holder": served_by_holder,
        },
        "without_header": {"requests": n, "misses": misses_since(after_header, after_plain)},
    }
    print("adapter-aware routing:", json.dumps(report))
    assert set().union(*held.values()) == set(versions), report  # 2 replicas hold all 4 versions ...
    assert all(len(v) < len(versions) for v in held.values()), report  # ... that no single one could
    assert served_by_holder == n, report
    assert misses_since(warm, after_header) == 0, report
    # a header that contradicts the body is refused by the replica (the header reached it)
    r = httpx.post(
        f"{service.v1}/chat/completions",
        json={"model": versions[0], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        headers={"serve-multiplexed-model-id": versions[1]},
        timeout=300,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "routing_header_mismatch", r.text


def test_replica_killed_under_load_is_restarted_and_reloads(service: Service, adapter_version: str) -> None:
    before = {r["replica_id"] for r in replicas(service)}
    victims = replica_processes(service)
    assert len(victims) == 2, [p.cmdline() for p in victims]
    engines_before = len(engine_processes(service))

    load = Load(service.url, "support")
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(CLIENTS):
            pool.submit(load.client)
        time.sleep(8)
        killed_at = time.monotonic()
        os.kill(victims[0].pid, signal.SIGKILL)
        # Serve notices, starts a new replica, which loads the model and reconciles the adapter
        new = wait_for(
            lambda: [r for r in with_adapter(service, adapter_version) if r["replica_id"] not in before],
            600,
            "a restarted replica reporting the adapter loaded",
            state=lambda: replicas(service),
        )
        recovered_at = time.monotonic()
        # load continues on both replicas until requests sent after the recovery have completed
        # (a request takes 10-20 s here: two engines share 2 cores); bounded
        deadline = recovered_at + 180
        while time.monotonic() < deadline and sum(r[0] > recovered_at for r in load.ok) < CLIENTS:
            time.sleep(1)
        load.stop.set()

    assert len(new) == 1
    assert load.ok, "no request succeeded"
    assert {s for _, _, s in load.ok} == {f"support@{adapter_version[:12]}"}
    # failures only from requests that were in flight on the killed replica (at most one per client)
    in_flight_failures = [f for f in load.failed if f[0] <= killed_at + 1.0]
    late = [f for f in load.failed if f[0] > killed_at + 1.0]
    report = {
        "ok": len(load.ok),
        "failed": len(load.failed),
        "failed_in_flight_at_kill": len(in_flight_failures),
        "failed_later": late[:5],
        "recovery_s": round(recovered_at - killed_at, 1),
        "engine_processes_before": engines_before,
        "engine_processes_after": len(engine_processes(service)),
    }
    print("replica kill:", json.dumps(report))
    assert len(in_flight_failures) <= CLIENTS, report
    assert not late, report  # requests sent after the kill went to the surviving replica
    after = [r for r in load.ok if r[0] > recovered_at]
    assert after, "no request completed after the restarted replica reported in"


def test_sigterm_drains_in_flight_streams(service: Service, adapter_version: str) -> None:
    body = {
        "model": "support",
        "messages": [{"role": "user", "content": "Tell me a long story about a lamp."}],
        # two engines share 2 cores here (~1-2 tokens/s per stream under load): short enough to finish
        # within the 60 s drain budget
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = threading.Barrier(5)
    results: list[dict[str, Any]] = []

    def stream() -> None:
        finish, n = None, 0
        with (
            httpx.Client(timeout=300) as http,
            http.stream("POST", f"{service.v1}/chat/completions", json=body) as r,
        ):
            assert r.status_code == 200
            first = True
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if first:
                    first = False
                    started.wait(120)
                if chunk.get("choices"):
                    n += 1
                    finish = chunk["choices"][0].get("finish_reason") or finish
        results.append({"finish": finish, "chunks": n})

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(300)  # every stream has its first token
    # SIGTERM to the `tuneloop serve` process, as `docker stop` / Kubernetes / systemd (KillMode=mixed)
    # deliver it; a signal to the whole process group would also hit Ray's own processes at once
    os.kill(service.process.pid, signal.SIGTERM)
    for t in threads:
        t.join(300)
    assert len(results) == 4, results
    assert all(r["finish"] in ("stop", "length") for r in results), results
    assert service.process.wait(180) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service.url}/health", timeout=5)
