"""The Ray Serve application: one deployment whose replicas each hold a vLLM engine and the HTTP app.

Each replica of `ModelServer` builds a `ServingRuntime` (engine + registry + request log + core) in its
constructor and serves the Litestar app (OpenAI API, admin API, health, metrics) as its ASGI ingress,
so a request crosses no extra deployment hop between the HTTP proxy and the engine. With several
replicas each one reports the adapter versions it holds, so that the proxy sends a request carrying
`serve_multiplexed_model_id: name@<12 hex>` to a replica holding that version (`serving.multiplex`).

`build_app(args)` is the application builder: `serve run serving.app:build_app` or the Serve config
YAML in `deploy/` (`import_path: serving.app:build_app`) pass `ServingConfig` fields as `args`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import ray
from ray import serve
from ray.serve import Application

from serving.config import ServingConfig

if TYPE_CHECKING:
    from serving.multiplex import ResidencyReporter

log = logging.getLogger("tuneloop.serving")


@serve.ingress()
class ModelServer:
    """A Serve replica: engine + routing + logging, behind the tuneloop HTTP app."""

    async def __init__(self, config: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        from serving.logging_setup import configure_replica_logging
        from serving.runtime import ServingRuntime

        self.config = ServingConfig.model_validate(config)
        configure_replica_logging(self.config.resolved_log_format(), access_log=self.config.access_log)
        context = serve.get_replica_context()
        replica_id = context.replica_tag if context is not None else None
        self.runtime = await ServingRuntime.create(self.config, replica_id=replica_id)
        self.residency_reporter = await self._residency_reporter(context)

    async def _residency_reporter(self, context: Any) -> ResidencyReporter | None:
        """With `adapter_routing`, report this replica's resident adapter versions to Serve's router
        (`serving.multiplex`); None otherwise. Also with `num_replicas: 1`: a Serve config's autoscaling
        may add replicas to it."""
        from serving.multiplex import ResidencyReporter, serve_publisher

        if context is None or not self.config.adapter_routing:
            return None
        publish = await asyncio.to_thread(serve_publisher, context.replica_id)
        if publish is None:
            return None
        reporter = ResidencyReporter(self.runtime.core.routing_ids, publish)
        reporter.start()
        return reporter

    def __serve_build_asgi_app__(self) -> Any:
        return self.runtime.http_app()

    async def check_health(self) -> None:
        await self.runtime.core.engine.check_health()

    async def __del__(self) -> None:
        reporter = getattr(self, "residency_reporter", None)
        if reporter is not None:
            await reporter.stop()
        await self.runtime.close()


def cluster_gpus() -> float:
    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Application builder: validates the config before anything starts, sizes replicas for the cluster."""
    config = ServingConfig.model_validate(args or {})
    gpus = config.replica_num_gpus
    if gpus is None:
        gpus = 1.0 if cluster_gpus() >= 1 else 0.0
    if gpus == 0:
        log.info("no GPU in the cluster: replicas run vLLM on CPU (%.2f CPUs each)", config.replica_num_cpus)
    deployment = serve.deployment(
        ModelServer,
        name="tuneloop",
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.replica_num_cpus, "num_gpus": gpus},
        health_check_period_s=10,
        health_check_timeout_s=60,
        graceful_shutdown_wait_loop_s=1,
        graceful_shutdown_timeout_s=60,
    )
    return deployment.bind(config.model_dump(mode="json"))  # type: ignore[attr-defined]
