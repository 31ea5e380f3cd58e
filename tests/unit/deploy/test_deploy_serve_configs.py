"""Serve configs (deploy/serve*.yaml and the RayService's serveConfigV2) validate with Ray Serve's own schema,
name a real application builder whose args are `ServingConfig`, and autoscale."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serving.config import ServingConfig

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def serve_configs() -> dict[str, dict[str, Any]]:
    configs = {name: yaml.safe_load((DEPLOY / name).read_text()) for name in ("serve.yaml", "serve-gpu.yaml")}
    rayservice = yaml.safe_load((DEPLOY / "kuberay" / "rayservice.yaml").read_text())
    configs["kuberay/rayservice.yaml"] = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return configs


CONFIGS = serve_configs()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_serve_config_matches_ray_serve_schema(name: str) -> None:
    ServeDeploySchema.model_validate(CONFIGS[name])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_import_path_is_a_real_builder_and_args_are_serving_config(name: str) -> None:
    for app in CONFIGS[name]["applications"]:
        module, _, attr = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), attr)
        assert callable(builder)
        ServingConfig.model_validate(app["args"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_autoscaling_and_replica_resources(name: str) -> None:
    for app in CONFIGS[name]["applications"]:
        args = app["args"]
        assert "replica_num_cpus" in args and "replica_num_gpus" in args, "resources must be explicit"
        (deployment,) = app["deployments"]
        assert deployment["name"] == "tuneloop"
        assert deployment["num_replicas"] == "auto"
        auto = deployment["autoscaling_config"]
        assert 1 <= auto["min_replicas"] <= auto["initial_replicas"] <= auto["max_replicas"]
        # resources come from the args only: a ray_actor_options override would silently replace them
        assert "ray_actor_options" not in deployment
        # autoscaling only reacts when a replica may hold more than the target
        assert ServingConfig.model_validate(args).max_ongoing_requests >= auto["target_ongoing_requests"]


def test_gpu_profiles_ask_for_a_gpu_and_cpu_profile_does_not() -> None:
    assert CONFIGS["serve.yaml"]["applications"][0]["args"]["replica_num_gpus"] == 0
    assert CONFIGS["serve-gpu.yaml"]["applications"][0]["args"]["replica_num_gpus"] == 1
    assert CONFIGS["kuberay/rayservice.yaml"]["applications"][0]["args"]["replica_num_gpus"] == 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_overrides_merge_with_the_built_deployment(name: str) -> None:
    """Apply the config's `deployments` overrides the way the Serve controller does (no Ray started)."""
    try:
        from ray.serve._private.application_state import override_deployment_info
        from ray.serve._private.deployment_info import DeploymentInfo
        from ray.serve.schema import ServeApplicationSchema
    except ImportError as exc:  # private Ray API: moved in another Ray version
        pytest.skip(f"Ray Serve internals changed: {exc}")
    from serving.app import build_app

    for app_config in CONFIGS[name]["applications"]:
        app = build_app(app_config["args"])
        bound = app._bound_deployment
        info = DeploymentInfo(
            deployment_config=bound._deployment_config,
            replica_config=bound._replica_config,
            start_time_ms=0,
            deployer_job_id="test",
        )
        merged = override_deployment_info(
            {bound.name: info}, ServeApplicationSchema.model_validate(app_config)
        )[bound.name]
        auto = app_config["deployments"][0]["autoscaling_config"]
        assert merged.deployment_config.num_replicas is None
        autoscaling = merged.deployment_config.autoscaling_config
        assert autoscaling is not None and autoscaling.max_replicas == auto["max_replicas"]
        options = merged.replica_config.ray_actor_options
        assert options["num_cpus"] == app_config["args"]["replica_num_cpus"]
        assert options["num_gpus"] == app_config["args"]["replica_num_gpus"]
