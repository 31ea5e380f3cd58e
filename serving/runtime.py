"""Composition of one serving replica: engine, database, registry, request log, core and HTTP app.

`ServingRuntime.create(config)` is what a Ray Serve replica runs in its constructor (and what tests run
in-process with a fake engine). Nothing here is Ray-specific.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from litestar import Litestar

from serving.api.app import Admin, RequestLimits, build_http_app
from serving.config import ServingConfig
from serving.core import CoreConfig, ServingCore
from serving.engine.base import Engine
from serving.logging_setup import register_database_url, register_secret
from serving.models import base_model_fingerprint, base_model_module_names, resolve_base_model
from serving.registry.artifacts import ArtifactStore
from serving.registry.registry import AdapterRegistry
from serving.registry.validation import base_module_shapes
from serving.registry_source import RegistrySource
from serving.request_log import FeedbackRecord, RequestLogWriter
from serving.store import Database

log = logging.getLogger("tuneloop.serving")


class _Feedback:
    def __init__(self, writer: RequestLogWriter) -> None:
        self.writer = writer

    def record_feedback(
        self,
        request_id: str,
        *,
        rating: float | None,
        thumbs: int | None,
        correction: str | None,
        source: str | None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self.writer.log_feedback(
            FeedbackRecord(
                request_id=request_id,
                rating=rating,
                thumbs=thumbs,
                correction=correction,
                source=source,
                tags=tags,
            )
        )


def base_aliases(base_path: Path) -> tuple[str, ...]:
    """Names of the base model besides `serving.router.base_names(base_id)` (its id, the id's last path
    part, `default`, `base`): the local folder's name. The registry and the router both get these."""
    return (base_path.name,)


def open_registry(config: ServingConfig, base_path: Path, base_id: str) -> tuple[Database, AdapterRegistry]:
    """The database (schema created if missing) and the adapter registry for `config`."""
    url = config.resolved_database_url()
    register_database_url(url)
    for key, value in config.registry_storage_options.items():
        if isinstance(value, str) and any(w in key.lower() for w in ("secret", "key", "token", "password")):
            register_secret(value)
    db = Database(url)
    registry = AdapterRegistry(
        db,
        ArtifactStore(config.resolved_registry_root(), storage_options=config.registry_storage_options),
        base_model_id=base_id,
        base_modules={n.rsplit(".", 1)[-1] for n in base_model_module_names(base_path)},
        max_lora_rank=config.engine.max_lora_rank,
        base_aliases=base_aliases(base_path),
        base_fingerprint=base_model_fingerprint(base_path),
        max_adapter_bytes=config.adapter_max_bytes,
        base_module_shapes=base_module_shapes(base_path),
    )
    return db, registry


def make_engine(config: ServingConfig, base_path: Path, base_id: str) -> Engine:
    if config.engine.kind == "fake":
        from serving.engine.fake import FakeEngine

        return FakeEngine(
            base_id, max_model_len=config.engine.max_model_len, max_lora_rank=config.engine.max_lora_rank
        )
    from serving.engine.vllm_engine import VLLMEngine, VLLMEngineConfig

    e = config.engine
    return VLLMEngine(
        VLLMEngineConfig(
            model=str(base_path),
            served_model_id=base_id,
            max_model_len=e.max_model_len,
            max_loras=e.max_loras,
            max_lora_rank=e.max_lora_rank,
            max_cpu_loras=e.max_cpu_loras,
            tool_call_parser=e.tool_call_parser,
            structured_outputs_backend=e.structured_outputs_backend,
            stream_interval=e.stream_interval,
            scheduling_policy=e.scheduling_policy,
            dtype=e.dtype,
            cpu_kvcache_space_gib=e.kv_cache_gib,
            gpu_memory_utilization=e.gpu_memory_utilization,
            max_num_seqs=e.max_num_seqs,
            max_num_batched_tokens=e.max_num_batched_tokens,
            seed=e.seed,
            cpu_slots=cpu_slots(config),
            cpu_slot_key=f"{config.home}:{base_path}",
        )
    )


def cpu_slots(config: ServingConfig) -> int | None:
    """How many CPU slots this service's engines split a machine's cores into (`engine.cpu_partition`):
    one per replica when several replicas run on a single-node Ray cluster, else None (no partitioning:
    on several nodes the replicas per machine are not known here)."""
    if config.engine.cpu_partition == "off" or config.num_replicas < 2:
        return None
    try:
        import ray
    except ImportError:
        return config.num_replicas
    if ray.is_initialized() and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        return None
    return config.num_replicas


class ServingRuntime:
    def __init__(
        self,
        config: ServingConfig,
        core: ServingCore,
        registry: AdapterRegistry,
        db: Database,
        request_log: RequestLogWriter,
    ) -> None:
        self.config = config
        self.core = core
        self.registry = registry
        self.db = db
        self.request_log = request_log
        self._closed = False

    @classmethod
    def build(
        cls, config: ServingConfig, *, engine: Engine | None = None, replica_id: str | None = None
    ) -> ServingRuntime:
        """Wire everything up without starting anything (no event loop needed)."""
        base_path = resolve_base_model(config.base_model)
        base_id = config.served_model_id or base_path.name
        db, registry = open_registry(config, base_path, base_id)
        request_log = RequestLogWriter(
            db,
            max_buffer=config.request_log_max_buffer,
            spill_dir=config.resolved_request_log_spill_dir(),
            max_spill_bytes=config.request_log_max_spill_bytes,
        )
        engine = engine or make_engine(config, base_path, base_id)
        core = ServingCore(
            engine,
            RegistrySource(registry),
            CoreConfig(
                base_id=base_id,
                base_aliases=base_aliases(base_path),
                poll_interval_s=config.poll_interval_s,
                engine_check_refresh_s=config.engine_check_refresh_s,
                preload_new_versions=config.preload_new_versions,
                default_max_tokens=config.default_max_tokens,
                max_resident=config.engine.max_cpu_loras or config.engine.max_loras,
            ),
            request_log=request_log,
            replica_id=replica_id,
        )
        return cls(config, core, registry, db, request_log)

    async def start(self) -> None:
        """Start the engine, load the desired adapters, begin reconciling (on the running event loop)."""
        await self.core.start()
        log.info("replica %s serving %s", self.core.replica_id, self.core.config.base_id)

    @classmethod
    async def create(
        cls, config: ServingConfig, *, engine: Engine | None = None, replica_id: str | None = None
    ) -> ServingRuntime:
        runtime = await asyncio.to_thread(cls.build, config, engine=engine, replica_id=replica_id)
        await runtime.start()
        return runtime

    def http_app(self) -> Litestar:
        roots = [Path(p) for p in self.config.adapter_import_roots]
        if self.registry.artifacts.is_local:
            roots.insert(0, Path(self.config.resolved_registry_root()).expanduser() / "incoming")
        admin_token = self.config.resolved_admin_token()
        api_keys = self.config.resolved_api_keys()
        for secret in (admin_token, *api_keys):
            register_secret(secret)
        return build_http_app(
            self.core,
            feedback=_Feedback(self.request_log),
            admin=Admin(self.registry, admin_token, tuple(roots), self.config.swap_timeout_s),
            api_keys=api_keys,
            request_log_stats=self._log_stats,
            limits=RequestLimits.from_config(self.config),
            rate_limit=self.config.rate_limit,
            access_log=self.config.access_log,
        )

    def _log_stats(self) -> dict[str, Any]:
        s = self.request_log.stats()
        return {
            "pending": s.pending,
            "dropped": s.dropped,
            "written": s.written,
            "spilled": s.spilled,
            "replayed": s.replayed,
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.core.drain(timeout_s=30)
        await self.core.shutdown()
        await asyncio.to_thread(self.request_log.close, 30.0)
        try:
            await asyncio.to_thread(self.registry.forget_replica, self.core.replica_id)
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.warning("could not remove replica heartbeat of %s", self.core.replica_id)
        await asyncio.to_thread(self.db.dispose)
