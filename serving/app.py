"""The Ray Serve application: one deployment whose replicas each hold a vLLM engine and the HTTP app.

Each replica of `ModelServer` builds a `ServingRuntime` (engine + registry + request log + core) in its
constructor and serves the Litestar app (OpenAI API, admin API, health, metrics) as its ASGI ingress,
so a request crosses no extra deployment hop between the HTTP proxy and the engine.

`build_app(args)` is the application builder: `serve run serving.app:build_app` or the Serve config
YAML in `deploy/` (`import_path: serving.app:build_app`) pass `ServingConfig` fields as `args`.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from serving.config import ServingConfig

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

    def __serve_build_asgi_app__(self) -> Any:
        return self.runtime.http_app()

    async def check_health(self) -> None:
        await self.runtime.core.engine.check_health()

    async def __del__(self) -> None:
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
