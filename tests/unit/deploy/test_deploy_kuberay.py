"""The KubeRay manifests: schema of the fields we rely on, probes on real routes, secrets wired."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
KUBERAY = ROOT / "deploy" / "kuberay"
SOURCE_DIRS = ("common", "serving", "tuneloop", "monitoring", "training")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


RAYSERVICE = load("rayservice.yaml")
CLUSTER = RAYSERVICE["spec"]["rayClusterConfig"]
GROUPS = {"head": CLUSTER["headGroupSpec"], **{g["groupName"]: g for g in CLUSTER["workerGroupSpecs"]}}


def containers() -> list[dict[str, Any]]:
    return [c for g in GROUPS.values() for c in g["template"]["spec"]["containers"]]


def test_rayservice_matches_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent / "rayservice.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(RAYSERVICE)


def test_ray_version_is_the_pinned_one() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[serve]=={CLUSTER["rayVersion"]}"' in pyproject


def test_head_cpu_and_gpu_groups() -> None:
    assert set(GROUPS) == {"head", "cpu", "gpu"}
    assert GROUPS["head"]["rayStartParams"].get("num-cpus") == "0"
    gpu = GROUPS["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1
    cpu = GROUPS["cpu"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"]
    for g in CLUSTER["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_probes_use_real_routes_and_ray_health() -> None:
    from serving.api.openai import ROUTES

    paths = {p for route in ROUTES for p in route.paths}
    for group in GROUPS.values():
        ray_container = group["template"]["spec"]["containers"][0]
        ready = ray_container["readinessProbe"]["httpGet"]
        assert ready["path"] in paths and ready["path"] == "/ready" and ready["port"] == 8000
        live = ray_container["livenessProbe"]["httpGet"]
        assert (live["path"], live["port"]) in {
            ("/api/gcs_healthz", 8265),
            ("/api/local_raylet_healthz", 52365),
        }


def test_graceful_shutdown_covers_serve_draining() -> None:
    from serving import app

    source = Path(app.__file__).read_text()
    drain_s = int(re.search(r"graceful_shutdown_timeout_s=(\d+)", source).group(1))  # type: ignore[union-attr]
    for group in GROUPS.values():
        spec = group["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > drain_s
        pre_stop = " ".join(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
        assert "ray stop" in pre_stop


def test_env_names_exist_in_the_code_and_secret_keys_in_the_example() -> None:
    code = "\n".join(
        p.read_text() for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts
    )
    secret = load("secret.example.yaml")
    for container in containers():
        for env in container.get("env", []):
            if env["name"].startswith("TUNELOOP_"):
                assert f'"{env["name"]}' in code, f"{env['name']} is read nowhere in the code"
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_loop_container_runs_a_real_cli_command_with_valid_settings() -> None:
    import typer.main

    from monitoring.spec import parse_spec
    from tuneloop import cli
    from tuneloop.settings import Settings

    cli._mount_optional()
    command = typer.main.get_command(cli.app)
    (loop,) = [c for c in GROUPS["head"]["template"]["spec"]["containers"] if c["name"] == "loop"]
    argv = loop["command"]
    assert argv[:2] == ["tuneloop", "loop"]
    options = {o for p in command.commands["loop"].params for o in p.opts}  # type: ignore[attr-defined]
    assert {a for a in argv[2:] if a.startswith("--")} <= options
    configmap = load("configmap.yaml")
    Settings.model_validate(yaml.safe_load(configmap["data"]["settings.yaml"]))
    parse_spec({**yaml.safe_load(configmap["data"]["loop.yaml"]), "database_url": "sqlite://"})
    mounted = {v["name"]: v for v in GROUPS["head"]["template"]["spec"]["volumes"]}
    config_mount = next(m for m in loop["volumeMounts"] if m["mountPath"] == "/etc/tuneloop")
    assert mounted[config_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]


def test_every_pod_mounts_the_shared_claim() -> None:
    claim = load("storage.yaml")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for group in GROUPS.values():
        spec = group["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/tuneloop")
            assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_every_ray_container_sets_serve_environment_tuneloop_serve_sets() -> None:
    from tuneloop.commands.serve import RAY_ENV_DEFAULTS

    serve_env = {k: v for k, v in RAY_ENV_DEFAULTS.items() if k.startswith("RAY_SERVE_")}
    ray_containers = [c for c in containers() if c["name"].startswith("ray-")]
    assert len(ray_containers) == len(GROUPS)  # one Ray container per group (the head's loop is a client)
    for container in ray_containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert {k: env.get(k) for k in serve_env} == serve_env, container["name"]
