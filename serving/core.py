"""The serving core of one replica: engine + routing snapshot + adapter residency + logging.

`ServingCore` is what a Ray Serve replica (or a test) holds. It

- keeps the registry's *desired set* (alias targets, experiment arms, staged versions) loaded and pinned:
  a background task polls the registry's generation and reconciles, so a replica that starts or restarts
  late loads the same adapters as its peers;
- serves every other active version *on demand*: the snapshot routes `name@<version prefix>` to any
  active version, and the first request for a cold one loads it on this replica (one load however many
  requests wait for it); at most `CoreConfig.max_resident` versions stay resident (the engine's
  `max_cpu_loras`), the least recently used unpinned idle one is evicted to make room;
- checks each adapter version's files against its sha256 and runs a smoke generation on first load, and
  refuses it if either fails, while everything else keeps serving; when the adapter itself is at fault
  (the engine refused it, the smoke generation failed) the registry marks it rejected for every replica;
- routes requests on an in-memory `RoutingSnapshot` (no database on the hot path), counts requests
  in flight per version, and unloads a version only after it has drained;
- reports what it has loaded through replica heartbeats so hot-swaps can wait for every replica; the
  heartbeat runs on its own (it never waits for the engine or a load), so a busy replica is not taken for
  dead; and which versions it holds (`routing_ids`), for Ray Serve's adapter-aware routing
  (`serving.multiplex`).

The request path reaches the engine through `ServingCore.engine`, a thin wrapper of the real engine that
makes a request's adapter resident before counting its prompt or generating (`ResidentEngine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from serving.config import DEFAULT_MAX_TOKENS, POLL_INTERVAL_S
from serving.engine.base import (
    CONTROL_PRIORITY,
    Engine,
    EngineError,
    GenerationChunk,
    GenerationRequest,
    LoRASpec,
    SamplingSettings,
)
from serving.errors import APIError, BadRequestError, ServiceUnavailableError
from serving.metrics import ServingMetrics
from serving.request_log import RequestRecord
from serving.router import ExperimentSpec, RoutingSnapshot, Target, VersionRef

log = logging.getLogger("tuneloop.serving")

LoadMode = Literal["pinned", "on_demand", "preload"]
"""Why a version loads: the desired set wants it, a request asked for it, or it was just registered."""


@dataclass(frozen=True, slots=True)
class RoutingState:
    """What the registry says replicas should serve, as plain data."""

    generation: int
    versions: tuple[VersionRef, ...]  # desired versions, with local paths
    aliases: dict[tuple[str, str], str]
    experiments: tuple[ExperimentSpec, ...]
    servable: tuple[VersionRef, ...] = ()
    """Every other active version, served on demand (`path` "" until `RoutingSource.fetch`)."""


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

    def fetch(self, ref: VersionRef) -> VersionRef:
        """`ref` with a local folder (downloaded from the artifact store when needed), before an
        on-demand load; raises when its artifact is unavailable."""


class RequestSink(Protocol):
    def log(self, record: RequestRecord) -> bool: ...


@dataclass(slots=True)
class CoreConfig:
    base_id: str
    base_aliases: tuple[str, ...] = ()  # names of the base besides `serving.router.base_names(base_id)`
    poll_interval_s: float = POLL_INTERVAL_S
    heartbeat_interval_s: float = 1.0
    smoke_prompt: str = "Hello"
    smoke_max_tokens: int = 1
    """One token: a whole forward pass through the adapter (what refuses weights that crash or produce
    nothing); every further token would cost another engine step of the busy engine during a swap."""
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    default_completion_max_tokens: int = 16
    max_resident: int | None = None
    """Versions resident at most (LRU beyond; the engine's `max_cpu_loras`); None: no bound. Pinned
    versions (the desired set) are never evicted and load even when they alone exceed the bound."""
    smoke_on_demand: bool = False
    """Also run the smoke generation on a version's first on-demand load on this replica (never on
    reloads). Off by default: it costs a whole short generation (measured 0.8-2.8 s on a busy 2-core CPU
    against ~20 ms for the engine's load, which already refuses weights that do not fit); pinned versions
    (alias targets, experiment arms, hot-swap stages) are always smoke-tested before they take traffic."""
    slot_wait_s: float = 30.0
    """How long an on-demand load waits for a slot when every resident version is pinned or busy."""
    preload_new_versions: bool = True
    """Load (and smoke-test) a version registered while this replica runs as soon as it sees it, when a
    slot is free (never evicting anything for it): a later swap to it or request for it finds it resident,
    and an adapter the engine refuses is rejected right after its registration instead of at its first
    swap. Versions registered before the replica started load on demand."""
    engine_check_refresh_s: float = 30.0
    """Longest time between two questions to the engine about what it holds when no load or eviction
    happened meanwhile (see `ServingCore._check_engine_evictions`)."""


class AdapterUnavailableError(APIError):
    """The requested adapter version cannot be served on this replica (503) or at all (400, rejected)."""


@dataclass(slots=True)
class _AdapterState:
    loaded: dict[str, VersionRef] = field(default_factory=dict)  # key -> ref, least recently used first
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    rejected: set[str] = field(default_factory=set)  # keys refused because the adapter is at fault
    inflight: Counter[str] = field(default_factory=Counter)
    pending_unload: set[str] = field(default_factory=set)
    pinned: set[str] = field(default_factory=set)  # the desired set
    loading: dict[str, asyncio.Future[VersionRef]] = field(default_factory=dict)
    reserved: set[str] = field(default_factory=set)  # keys loading into a slot they made room for
    smoked: set[str] = field(default_factory=set)  # keys whose smoke generation passed on this replica


class ServingCore:
    engine: Engine
    """What the request path calls: the real engine, with adapters made resident first."""

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
        self.raw_engine = engine
        self.engine = cast(Engine, ResidentEngine(engine, self))
        self.source = source
        self.config = config
        self.replica_id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or ServingMetrics(self.replica_id)
        if config.max_resident is not None:
            self.metrics.adapter_capacity.set(config.max_resident)
        self.request_log = request_log
        self.snapshot = RoutingSnapshot.build(config.base_id, [], {}, [], base_aliases=config.base_aliases)
        self._adapters = _AdapterState()
        self._reconcile_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._report_lock = asyncio.Lock()
        self._residency_epoch = 0  # bumped by every load and eviction (see `_sync_engine_evictions`)
        self._checked_epoch = -1  # the epoch of the last clean `_sync_engine_evictions`, and when it ran
        self._checked_at = 0.0
        self._ready = False
        self._closing = False
        self._rng = random.Random()
        self._by_name: dict[str, VersionRef] = {}  # engine LoRA name (short ref) -> version
        self._seen_versions: set[str] | None = None  # servable keys at the last reconcile (None: none yet)
        self._slot_freed = asyncio.Event()
        self._unloads: set[asyncio.Future[None]] = set()  # engine unloads sent, not yet answered
        self.inflight_total = 0

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.raw_engine.start()
        await self.reconcile(force=True)
        self._ready = True
        if self.source is not None:
            # three loops, so that none waits for another: the registry poll (loads, smoke tests), the
            # heartbeat (never touches the engine: a replica busy loading is still alive) and the check
            # for versions the engine evicted on its own (a round trip through a possibly busy engine)
            self._tasks = [
                asyncio.create_task(
                    self._every(self.config.poll_interval_s, self.reconcile), name="tuneloop-reconcile"
                ),
                asyncio.create_task(
                    self._every(self.config.heartbeat_interval_s, self._report), name="tuneloop-heartbeat"
                ),
                asyncio.create_task(
                    self._every(self.config.heartbeat_interval_s, self._check_engine_evictions),
                    name="tuneloop-engine-evictions",
                ),
            ]

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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._unloads:
            await asyncio.gather(*self._unloads, return_exceptions=True)
        await self.raw_engine.shutdown()

    # ----------------------------------------------------------------- reconciliation
    async def _every(self, interval_s: float, step: Callable[[], Awaitable[object]]) -> None:
        """Run `step` every `interval_s` until closing; a failed step is logged and retried."""
        while not self._closing:
            try:
                await step()
            except Exception:  # noqa: BLE001 - a background step must never kill its loop
                log.exception("%s failed; will retry", getattr(step, "__name__", step))
            await asyncio.sleep(interval_s)

    async def _report(self) -> None:
        """Tell the registry what this replica has loaded and refused (its heartbeat). Reads only this
        replica's own bookkeeping, so a busy engine or a long load never makes the replica look dead."""
        if self.source is None:
            return
        async with self._report_lock:  # reports land in the order their state was taken
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
            if not force and generation == self.snapshot.generation and not self._pinned_missing():
                return False
            state = await asyncio.to_thread(self.source.routing_state)
            await self.apply(state)
            await self._report()
            return True

    def _pinned_missing(self) -> set[str]:
        """Desired versions that are neither resident, loading nor refused here: the engine evicted them
        (its own LRU) or a restart lost them. The poll loop reloads them without waiting for a new
        registry generation."""
        ads = self._adapters
        return ads.pinned - set(ads.loaded) - set(ads.loading) - set(ads.failed)

    async def apply(self, state: RoutingState) -> None:
        """Load and pin what is desired (smoke-testing new versions), switch routing (every active
        version is routable; cold ones load on first use), release what left the desired set and unload
        what is no longer servable once drained."""
        ads = self._adapters
        desired = {v.key: v for v in state.versions}
        unpinned = ads.pinned - set(desired)
        ads.pinned = set(desired)
        self.metrics.adapter_pinned.set(len(desired))
        for key, ref in desired.items():
            if key in ads.loaded or key in ads.failed:
                continue
            ads.pending_unload.discard(key)
            with contextlib.suppress(AdapterUnavailableError):  # recorded in `failed`
                await self._resident(ref, on_demand=False)
        servable = {v.key: v for v in state.servable}
        servable.update(desired)
        routable = [ref for key, ref in servable.items() if key not in ads.rejected]
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
        self._by_name = {ref.short: ref for ref in routable}
        self.metrics.routing_generation.set(state.generation)
        if self._seen_versions is not None and self.config.preload_new_versions:
            for ref in routable:
                if ref.key not in self._seen_versions:
                    self._preload(ref)
        self._seen_versions = set(servable)
        for key in list(ads.loaded):
            # a version that left the desired set is released (as before on-demand serving); one loaded
            # on demand stays in the LRU while it is servable
            if key in unpinned or key not in servable:
                ads.pending_unload.add(key)
        for key in list(ads.failed):
            if key not in desired:
                del ads.failed[key]  # may be retried if it is desired or requested again
                ads.rejected.discard(key)
        await self._unload_drained()

    # ----------------------------------------------------------------- residency
    async def ensure_resident(self, lora: LoRASpec, *, count: bool = True) -> LoRASpec:
        """Make the version behind `lora` (an engine LoRA name, `name@<12 hex>`) resident on this replica
        and return its spec with the local folder. Concurrent calls for a cold version share one load.

        Raises `AdapterUnavailableError`: 400 `adapter_rejected` when the adapter is at fault, 503 when
        it cannot be served here (artifact unavailable, no free slot)."""
        ref = self._by_name.get(lora.name)
        if ref is None:
            loaded = next((r for r in self._adapters.loaded.values() if r.short == lora.name), None)
            if loaded is None:
                return lora  # not a registry version (e.g. a test's own adapter): the engine decides
            ref = loaded
        key = ref.key
        ads = self._adapters
        resident = ads.loaded.get(key)
        if resident is not None:
            ads.loaded[key] = ads.loaded.pop(key)  # most recently used
            if key not in ads.pinned and ads.inflight[key] == 0:
                ads.pending_unload.discard(key)  # requested again: back in the LRU
            if count:
                self.metrics.adapter_lookups.labels("hit").inc()
            return resident.lora()
        if count:
            self.metrics.adapter_lookups.labels("miss").inc()
        # a pinned version the engine evicted on its own (more pinned versions than its slots) loads as
        # pinned ones do, beyond the bound if need be, instead of waiting for a slot that pins never free
        return (await self._resident(ref, on_demand=key not in ads.pinned)).lora()

    async def _resident(self, ref: VersionRef, *, on_demand: bool) -> VersionRef:
        ads = self._adapters
        key = ref.key
        if key in ads.failed:
            raise self._unavailable(ref, ads.failed[key])
        future = ads.loading.get(key)
        if future is None:
            future = self._start_load(ref, "on_demand" if on_demand else "pinned")
        return await asyncio.shield(future)

    def _start_load(self, ref: VersionRef, mode: LoadMode) -> asyncio.Future[VersionRef]:
        """Start loading `ref` in the background; the future that every waiter for it shares."""
        future: asyncio.Future[VersionRef] = asyncio.get_running_loop().create_future()
        self._adapters.loading[ref.key] = future
        task = asyncio.create_task(self._load(ref, future, mode=mode), name=f"{mode}-{ref.short}")
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        return future

    def _preload(self, ref: VersionRef) -> None:
        """Start loading a newly registered version into a free slot, in the background (see
        `CoreConfig.preload_new_versions`); nothing when no slot is free or it is already here."""
        ads = self._adapters
        key = ref.key
        capacity = self.config.max_resident
        if key in ads.loaded or key in ads.loading or key in ads.failed or capacity is None:
            return
        if len(ads.loaded) + len(ads.reserved) >= capacity:
            return
        ads.reserved.add(key)  # the free slot is this load's from now on
        future = self._start_load(ref, "preload")
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)  # nobody awaits it

    def _unavailable(
        self, ref: VersionRef, reason: str, *, rejected: bool | None = None
    ) -> AdapterUnavailableError:
        """The client's error for `ref`; `rejected` None: as recorded on this replica."""
        if rejected is None:
            rejected = ref.key in self._adapters.rejected
        if rejected:
            return AdapterUnavailableError(
                f"Adapter version {ref.short} was rejected: {reason}",
                param="model",
                code="adapter_rejected",
                status_code=BadRequestError.status_code,
            )
        return AdapterUnavailableError(
            f"Adapter version {ref.short} cannot be served on this replica: {reason}",
            code="adapter_unavailable",
            status_code=ServiceUnavailableError.status_code,
        )

    async def _load(self, ref: VersionRef, future: asyncio.Future[VersionRef], *, mode: LoadMode) -> None:
        """Load `ref` into a slot (evicting the LRU idle unpinned version when full; a preload comes with
        its slot reserved) and settle `future`."""
        ads = self._adapters
        key = ref.key
        started = time.perf_counter()
        on_demand = mode == "on_demand"
        try:
            if not ref.path and mode != "pinned" and self.source is not None:
                try:
                    ref = await asyncio.to_thread(self.source.fetch, ref)
                except Exception as exc:  # noqa: BLE001 - the artifact is unavailable: refuse here only
                    await self._refuse(ref, f"artifact check failed: {exc}", reject=False)
                    raise self._unavailable(ref, f"artifact check failed: {exc}", rejected=False) from exc
            if mode != "preload":
                await self._make_room(key, strict=on_demand)
            smoke = key not in ads.smoked and (self.config.smoke_on_demand or not on_demand)
            error, reject = await self._load_and_smoke(ref, smoke=smoke)
            if error is not None:
                await self._refuse(ref, error, reject=reject)
                raise self._unavailable(ref, error, rejected=reject)  # a reconcile may have run meanwhile
            if smoke:
                ads.smoked.add(key)
            ads.loaded[key] = ref
            self._residency_epoch += 1
            self.metrics.adapter_loaded.labels(ref.short).set(1)
            self.metrics.adapter_loads.labels(mode).inc()
            if on_demand:
                self.metrics.adapter_cold_load.observe(time.perf_counter() - started)
            if mode == "pinned" and key not in ads.pinned:
                ads.pending_unload.add(key)  # unpinned while it loaded
            future.set_result(ref)
        except BaseException as exc:
            if not future.done():
                future.set_exception(
                    exc if isinstance(exc, APIError) else self._unavailable(ref, f"loading failed: {exc}")
                )
            if not isinstance(exc, Exception):
                raise
        finally:
            ads.reserved.discard(key)
            ads.loading.pop(key, None)
            self.metrics.loaded_adapters.set(len(ads.loaded))

    async def _make_room(self, key: str, *, strict: bool) -> None:
        """Reserve a slot for `key`: evict least recently used versions that are neither pinned nor in
        use until one is free. `strict` (on-demand loads) waits for a slot up to `slot_wait_s` and then
        raises; otherwise (pinned versions) the bound may be exceeded."""
        capacity = self.config.max_resident
        ads = self._adapters
        deadline = time.monotonic() + self.config.slot_wait_s
        while capacity is not None and len(ads.loaded) + len(ads.reserved) >= capacity:
            victim = next(
                (k for k in ads.loaded if k not in ads.pinned and ads.inflight[k] <= 0),
                None,
            )
            if victim is not None:
                await self._evict(victim, reason="lru", wait=False)
                continue
            if not strict:
                log.warning(
                    "pinned adapters exceed max_resident=%d on %s; loading %s anyway",
                    capacity,
                    self.replica_id,
                    key,
                )
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AdapterUnavailableError(
                    f"All {capacity} adapter slots of this replica are pinned or serving requests; "
                    "retry shortly.",
                    code="adapter_slots_busy",
                    status_code=ServiceUnavailableError.status_code,
                )
            event = self._slot_freed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 0.5))
        ads.reserved.add(key)

    async def _evict(self, key: str, *, reason: str, wait: bool = True) -> None:
        """Drop `key` from the resident set and unload it from the engine. `wait=False` (making room for a
        load) only sends the unload: the engine handles its control calls in order between two steps, so
        the load that follows is handled at the same step boundary instead of one step later."""
        ref = self._adapters.loaded.pop(key, None)
        self._adapters.pending_unload.discard(key)
        if ref is None:
            return
        self._residency_epoch += 1
        self.metrics.adapter_loaded.remove(ref.short)
        self.metrics.adapter_evictions.labels(reason).inc()
        self.metrics.loaded_adapters.set(len(self._adapters.loaded))
        if wait:
            await self._unload(ref, reason)
            return
        unload = asyncio.ensure_future(self._unload(ref, reason))
        self._unloads.add(unload)
        unload.add_done_callback(self._unloads.discard)
        await asyncio.sleep(0)  # the unload task runs up to sending its call, ahead of the caller's load

    async def _unload(self, ref: VersionRef, reason: str) -> None:
        try:
            await self.raw_engine.unload_lora(ref.lora())
        except Exception:  # noqa: BLE001
            log.exception("unloading %s failed", ref.short)
            return
        log.info("adapter %s unloaded from %s (%s)", ref.short, self.replica_id, reason)

    def _signal_slot(self) -> None:
        self._slot_freed.set()
        self._slot_freed = asyncio.Event()

    async def _check_engine_evictions(self) -> None:
        """Ask the engine what it holds only when it may have evicted something on its own: vLLM evicts
        only to make room for a load, so after a clean answer nothing can change until the next load or
        eviction here. A slow refresh (`engine_check_refresh_s`) covers a load the engine did inside a
        step. Asking is not free: every call through vLLM's multiprocess executor keeps its worker
        busy-polling the message queue for a second afterwards (vLLM's `SpinCondition`), so asking
        every heartbeat kept an idle replica's worker at ~100 % of a core for ever."""
        if (
            self._residency_epoch == self._checked_epoch
            and time.monotonic() - self._checked_at < self.config.engine_check_refresh_s
        ):
            return
        await self._sync_engine_evictions()

    async def _sync_engine_evictions(self) -> None:
        """Drop versions the engine evicted on its own (its LRU) from this replica's bookkeeping (and so
        from what it reports). The engine's list is only trusted when no load or eviction happened while
        it was asked: otherwise the next round decides."""
        epoch = self._residency_epoch
        try:
            names = set(await self.raw_engine.list_loras())
        except Exception:  # noqa: BLE001 - an engine that cannot list keeps the bookkeeping as is
            return
        if epoch != self._residency_epoch:
            return
        self._checked_epoch, self._checked_at = epoch, time.monotonic()
        ads = self._adapters
        forgot = False
        for key, ref in list(ads.loaded.items()):
            if ref.short not in names and key not in ads.loading:
                del ads.loaded[key]
                ads.pending_unload.discard(key)
                with contextlib.suppress(KeyError):
                    self.metrics.adapter_loaded.remove(ref.short)
                self.metrics.adapter_evictions.labels("engine").inc()
                forgot = True
        self.metrics.loaded_adapters.set(len(ads.loaded))
        if forgot:
            await self._report()

    async def _refuse(self, ref: VersionRef, error: str, *, reject: bool) -> None:
        """Refuse `ref` on this replica; when the adapter itself is at fault (`reject`: the engine refused
        it or its smoke generation failed, not a storage problem), the registry marks it rejected for
        every replica."""
        self._adapters.failed[ref.key] = error
        if reject:
            self._adapters.rejected.add(ref.key)
        self.metrics.adapter_load_failures.labels(ref.short).inc()
        log.error("adapter %s refused on %s: %s", ref.short, self.replica_id, error)
        if reject and self.source is not None:
            try:
                await asyncio.to_thread(self.source.reject, ref, error, self.replica_id)
            except Exception:  # noqa: BLE001 - the local refusal stands; the heartbeat still reports it
                log.exception("could not record the rejection of %s", ref.short)

    async def _load_and_smoke(self, ref: VersionRef, *, smoke: bool = True) -> tuple[str | None, bool]:
        """Verify, load and (`smoke`) smoke-test `ref`: (None, False) when it serves, else (why, whether
        the adapter itself is at fault)."""
        lora = ref.lora()
        t0 = time.perf_counter()
        if self.source is not None:
            try:
                await asyncio.to_thread(self.source.verify, ref)
            except Exception as exc:  # noqa: BLE001 - a damaged artifact refuses the adapter, nothing else
                return f"artifact check failed: {exc}", False
        t1 = time.perf_counter()
        try:
            await self.raw_engine.load_lora(lora)
        except Exception as exc:  # noqa: BLE001 - any load failure refuses the adapter
            return f"engine refused to load it: {exc}", True
        t2 = time.perf_counter()
        text = ""
        if smoke:
            try:
                text = await self._smoke(lora)
            except Exception as exc:  # noqa: BLE001
                with contextlib.suppress(Exception):
                    await self.raw_engine.unload_lora(lora)
                return f"smoke generation failed: {exc}", True
        log.info(
            "adapter %s loaded on %s: verify %.0f ms, engine load %.0f ms, smoke %s",
            ref.short,
            self.replica_id,
            (t1 - t0) * 1000,
            (t2 - t1) * 1000,
            f"{(time.perf_counter() - t2) * 1000:.0f} ms (output {text[:40]!r})" if smoke else "skipped",
        )
        return None, False

    async def _smoke(self, lora: LoRASpec) -> str:
        req = GenerationRequest(
            request_id=f"smoke-{uuid.uuid4().hex}",
            sampling=SamplingSettings(max_tokens=self.config.smoke_max_tokens, temperature=0.0),
            messages=({"role": "user", "content": self.config.smoke_prompt},),
            lora=lora,
            priority=CONTROL_PRIORITY,  # ahead of queued client requests: a swap does not wait for the queue
        )
        text, tokens = "", 0
        async for chunk in self.raw_engine.generate(req):
            text += chunk.text
            tokens = max(tokens, chunk.completion_tokens)
        if tokens <= 0:
            raise EngineError("the adapter produced no tokens")
        return text

    async def _unload_drained(self) -> None:
        ads = self._adapters
        for key in list(ads.pending_unload):
            if ads.inflight[key] > 0 or key in ads.pinned or key in ads.loading:
                if key in ads.pinned:
                    ads.pending_unload.discard(key)
                continue
            await self._evict(key, reason="released")
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
                if self._adapters.inflight[key] <= 0:
                    self._signal_slot()
                    if key in self._adapters.pending_unload:
                        with contextlib.suppress(RuntimeError):
                            asyncio.get_running_loop().create_task(self._unload_drained())

    def loaded_keys(self) -> list[str]:
        return sorted(self._adapters.loaded)

    def routing_ids(self) -> list[str]:
        """The versions this replica holds or is loading, as `name@<12 hex>` (`VersionRef.short`): what it
        reports to Ray Serve's router for adapter-aware routing (`serving.multiplex`). Loading versions
        count, so that requests for a version arriving during its load follow the first one here."""
        ads = self._adapters
        ids = {ref.short for ref in ads.loaded.values()}
        ids.update(_short(key) for key in ads.loading)
        return sorted(ids)

    def failed_keys(self) -> dict[str, str]:
        return dict(self._adapters.failed)

    def log_record(self, record: RequestRecord) -> None:
        if self.request_log is not None:
            self.request_log.log(record)


def _short(key: str) -> str:
    """`VersionRef.short` of a version key (`name@<version>`)."""
    name, _, version = key.partition("@")
    return f"{name}@{version[:12]}"


class ResidentEngine:
    """The engine as the request path sees it (`ServingCore.engine`): a request's adapter is made
    resident (`ServingCore.ensure_resident`) before its prompt is counted (so a load failure is the
    request's HTTP error, before any streaming) and again before it generates (it may have been evicted
    meanwhile; the request then carries the resident version's local folder). Everything else is the
    wrapped engine's."""

    def __init__(self, engine: Engine, core: ServingCore) -> None:
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_core", core)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._engine, name, value)

    async def _with_resident(self, request: GenerationRequest, *, count: bool) -> GenerationRequest:
        if request.lora is None:
            return request
        lora = await self._core.ensure_resident(request.lora, count=count)
        return request if lora == request.lora else dataclasses.replace(request, lora=lora)

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        request = await self._with_resident(request, count=True)
        return await self._engine.count_prompt_tokens(request)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        request = await self._with_resident(request, count=False)
        async for chunk in self._engine.generate(request):
            yield chunk
