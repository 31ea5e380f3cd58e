"""The serving core of one replica: engine + routing snapshot + adapter reconciliation + logging.

`ServingCore` is what a Ray Serve replica (or a test) holds. It

- keeps the engine's loaded adapters equal to the registry's *desired set* (alias targets, experiment
  arms, staged versions): a background task polls the registry's generation and reconciles, so a
  replica that starts or restarts late loads the same adapters as its peers;
- checks each adapter version's files against its sha256 and runs a smoke generation on first load, and
  refuses it (never routes to it) if either fails, while everything else keeps serving;
- routes requests on an in-memory `RoutingSnapshot` (no database on the hot path), counts requests
  in flight per version, and unloads a version that left the desired set only after it has drained;
- reports what it has loaded through replica heartbeats so hot-swaps can wait for every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from serving.engine.base import Engine, EngineError, GenerationRequest, LoRASpec, SamplingSettings
from serving.metrics import ServingMetrics
from serving.request_log import RequestRecord
from serving.router import ExperimentSpec, RoutingSnapshot, Target, VersionRef

log = logging.getLogger("tuneloop.serving")


@dataclass(frozen=True, slots=True)
class RoutingState:
    """What the registry says replicas should serve, as plain data."""

    generation: int
    versions: tuple[VersionRef, ...]  # desired versions, with local paths
    aliases: dict[tuple[str, str], str]
    experiments: tuple[ExperimentSpec, ...]


class RoutingSource(Protocol):
    """The registry as the serving core needs it (adapted in `serving.registry_source`)."""

    def generation(self) -> int: ...

    def routing_state(self) -> RoutingState: ...

    def verify(self, ref: VersionRef) -> None:
        """Raise if the version's local files are not exactly what was registered (checked before load)."""

    def heartbeat(
        self, replica_id: str, loaded: list[str], failed: dict[str, str], generation: int
    ) -> None: ...

    def reject(self, ref: VersionRef, reason: str, replica_id: str) -> None:
        """Record that the version cannot be served (the engine refused it or its smoke generation
        failed): the registry marks it rejected once, for every replica."""


class RequestSink(Protocol):
    def log(self, record: RequestRecord) -> bool: ...


@dataclass(slots=True)
class CoreConfig:
    base_id: str
    base_aliases: tuple[str, ...] = ()  # names of the base besides `serving.router.base_names(base_id)`
    poll_interval_s: float = 0.2
    heartbeat_interval_s: float = 1.0
    smoke_prompt: str = "Hello"
    smoke_max_tokens: int = 4
    default_max_tokens: int = 256
    default_completion_max_tokens: int = 16


@dataclass(slots=True)
class _AdapterState:
    loaded: dict[str, VersionRef] = field(default_factory=dict)  # key -> ref
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    inflight: Counter[str] = field(default_factory=Counter)
    pending_unload: set[str] = field(default_factory=set)


class ServingCore:
    def __init__(
        self,
        engine: Engine,
        source: RoutingSource | None,
        config: CoreConfig,
        *,
        metrics: ServingMetrics | None = None,
        request_log: RequestSink | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.config = config
        self.replica_id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or ServingMetrics(self.replica_id)
        self.request_log = request_log
        self.snapshot = RoutingSnapshot.build(config.base_id, [], {}, [], base_aliases=config.base_aliases)
        self._adapters = _AdapterState()
        self._reconcile_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self._closing = False
        self._last_heartbeat = 0.0
        self._rng = random.Random()
        self.inflight_total = 0

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.engine.start()
        await self.reconcile(force=True)
        self._ready = True
        if self.source is not None:
            self._task = asyncio.create_task(self._poll_loop(), name="tuneloop-reconcile")

    @property
    def ready(self) -> bool:
        return self._ready and not self._closing

    async def drain(self, timeout_s: float = 30.0) -> bool:
        """Stop taking traffic (ready → false) and wait for requests in flight to finish."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        while self.inflight_total > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.inflight_total == 0

    async def shutdown(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.engine.shutdown()

    # ----------------------------------------------------------------- reconciliation
    async def _poll_loop(self) -> None:
        assert self.source is not None
        while not self._closing:
            try:
                await self.reconcile()
                now = time.monotonic()
                if now - self._last_heartbeat >= self.config.heartbeat_interval_s:
                    await self._heartbeat()
            except Exception:  # noqa: BLE001 - a poll must never kill the loop
                log.exception("reconcile failed; will retry")
            await asyncio.sleep(self.config.poll_interval_s)

    async def _heartbeat(self) -> None:
        if self.source is None:
            return
        self._last_heartbeat = time.monotonic()
        await asyncio.to_thread(
            self.source.heartbeat,
            self.replica_id,
            sorted(self._adapters.loaded),
            dict(self._adapters.failed),
            self.snapshot.generation,
        )

    async def reconcile(self, force: bool = False) -> bool:
        """Bring loaded adapters and routing up to the registry's generation. Returns True if changed."""
        if self.source is None:
            return False
        async with self._reconcile_lock:
            generation = await asyncio.to_thread(self.source.generation)
            if not force and generation == self.snapshot.generation:
                return False
            state = await asyncio.to_thread(self.source.routing_state)
            await self.apply(state)
            await self._heartbeat()
            return True

    async def apply(self, state: RoutingState) -> None:
        """Load what is desired (smoke-testing new versions), switch routing, unload what drained."""
        ads = self._adapters
        desired = {v.key: v for v in state.versions}
        for key, ref in desired.items():
            if key in ads.loaded or key in ads.failed:
                continue
            ads.pending_unload.discard(key)
            error, reject = await self._load_and_smoke(ref)
            if error is None:
                ads.loaded[key] = ref
                self.metrics.adapter_loaded.labels(ref.short).set(1)
            else:
                await self._refuse(ref, error, reject=reject)
        routable = [ref for key, ref in ads.loaded.items() if key in desired]
        routable_versions = {(r.name, r.version) for r in routable}
        aliases = {k: v for k, v in state.aliases.items() if (k[0], v) in routable_versions}
        self.snapshot = RoutingSnapshot.build(
            self.config.base_id,
            routable,
            aliases,
            state.experiments,
            base_aliases=self.config.base_aliases,
            generation=state.generation,
        )
        self.metrics.routing_generation.set(state.generation)
        for key in list(ads.loaded):
            if key not in desired:
                ads.pending_unload.add(key)
        for key in list(ads.failed):
            if key not in desired:
                del ads.failed[key]  # may be retried if it becomes desired again
        await self._unload_drained()

    async def _refuse(self, ref: VersionRef, error: str, *, reject: bool) -> None:
        """Refuse `ref` on this replica; when the adapter itself is at fault (`reject`: the engine refused
        it or its smoke generation failed, not a storage problem), the registry marks it rejected for
        every replica."""
        self._adapters.failed[ref.key] = error
        self.metrics.adapter_load_failures.labels(ref.short).inc()
        log.error("adapter %s refused on %s: %s", ref.short, self.replica_id, error)
        if reject and self.source is not None:
            try:
                await asyncio.to_thread(self.source.reject, ref, error, self.replica_id)
            except Exception:  # noqa: BLE001 - the local refusal stands; the heartbeat still reports it
                log.exception("could not record the rejection of %s", ref.short)

    async def _load_and_smoke(self, ref: VersionRef) -> tuple[str | None, bool]:
        """Verify, load and smoke-test `ref`: (None, False) when it serves, else (why, whether the adapter
        itself is at fault)."""
        lora = ref.lora()
        if self.source is not None:
            try:
                await asyncio.to_thread(self.source.verify, ref)
            except Exception as exc:  # noqa: BLE001 - a damaged artifact refuses the adapter, nothing else
                return f"artifact check failed: {exc}", False
        try:
            await self.engine.load_lora(lora)
        except Exception as exc:  # noqa: BLE001 - any load failure refuses the adapter
            return f"engine refused to load it: {exc}", True
        try:
            text = await self._smoke(lora)
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                await self.engine.unload_lora(lora)
            return f"smoke generation failed: {exc}", True
        log.info("adapter %s loaded on %s (smoke output %r)", ref.short, self.replica_id, text[:40])
        return None, False

    async def _smoke(self, lora: LoRASpec) -> str:
        req = GenerationRequest(
            request_id=f"smoke-{uuid.uuid4().hex}",
            sampling=SamplingSettings(max_tokens=self.config.smoke_max_tokens, temperature=0.0),
            messages=({"role": "user", "content": self.config.smoke_prompt},),
            lora=lora,
        )
        text, tokens = "", 0
        async for chunk in self.engine.generate(req):
            text += chunk.text
            tokens = max(tokens, chunk.completion_tokens)
        if tokens <= 0:
            raise EngineError("the adapter produced no tokens")
        return text

    async def _unload_drained(self) -> None:
        ads = self._adapters
        for key in list(ads.pending_unload):
            if ads.inflight[key] > 0:
                continue
            ref = ads.loaded.pop(key, None)
            ads.pending_unload.discard(key)
            if ref is None:
                continue
            try:
                await self.engine.unload_lora(ref.lora())
            except Exception:  # noqa: BLE001
                log.exception("unloading %s failed", ref.short)
            self.metrics.adapter_loaded.remove(ref.short)
            log.info("adapter %s unloaded from %s", ref.short, self.replica_id)
        self.metrics.loaded_adapters.set(len(ads.loaded))

    # ----------------------------------------------------------------- request path
    def route(self, model: str, user: str | None) -> tuple[Target, Target | None]:
        return self.snapshot.resolve(model, user, self._rng)

    @contextlib.contextmanager
    def lease(self, target: Target) -> Iterator[None]:
        """Count a request in flight on `target` so its adapter is not unloaded under it."""
        key = target.version.key if target.version else None
        self.inflight_total += 1
        if key:
            self._adapters.inflight[key] += 1
        self.metrics.inflight.labels(target.served_by).inc()
        try:
            yield
        finally:
            self.inflight_total -= 1
            self.metrics.inflight.labels(target.served_by).dec()
            if key:
                self._adapters.inflight[key] -= 1
                if self._adapters.inflight[key] <= 0 and key in self._adapters.pending_unload:
                    with contextlib.suppress(RuntimeError):
                        asyncio.get_running_loop().create_task(self._unload_drained())

    def loaded_keys(self) -> list[str]:
        return sorted(self._adapters.loaded)

    def failed_keys(self) -> dict[str, str]:
        return dict(self._adapters.failed)

    def log_record(self, record: RequestRecord) -> None:
        if self.request_log is not None:
            self.request_log.log(record)
