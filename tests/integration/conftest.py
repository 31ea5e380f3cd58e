"""One real tuneloop service per test session: `tuneloop serve` (Ray + Serve + vLLM on CPU) in a
subprocess on a free loopback port, with its own state folder; stopped with SIGTERM (graceful drain)
at the end. Fixtures: `tuneloop_service` (everything), `openai_base_url` (e.g. http://127.0.0.1:P/v1),
`champion_adapter` (register a real adapter on it).
The launcher lives in `serving.testing` (the reliability suite starts its own multi-replica service).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from serving.testing import Service, ServiceStartError, launch_service, make_peft_adapter

ADMIN_TOKEN = "integration-admin-token"
START_TIMEOUT_S = float(os.environ.get("TUNELOOP_TEST_START_TIMEOUT", "900"))


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from serving.models import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tuneloop_service(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("tuneloop-home")
    try:
        with launch_service(
            home, default_model_path, admin_token=ADMIN_TOKEN, start_timeout_s=START_TIMEOUT_S
        ) as service:
            yield service
    except ServiceStartError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def openai_base_url(tuneloop_service: Service) -> str:
    return tuneloop_service.v1


@pytest.fixture
def champion_adapter(
    tuneloop_service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, int], str]:
    """`make(name, seed)`: a real peft adapter of the base (random weights from `seed`) registered through
    the admin API as `name@champion` on the session's service; returns its version (sha256)."""

    def make(name: str, seed: int) -> str:
        svc = tuneloop_service
        made = make_peft_adapter(svc.base_model_path, tmp_path_factory.mktemp(name) / name, seed=seed)
        folder = shutil.copytree(made, svc.home / "registry" / "incoming" / f"{name}-{seed}")
        r = httpx.post(
            f"{svc.url}/admin/adapters",
            json={"path": str(folder), "name": name, "alias": "champion"},
            headers=svc.admin_headers(),
            timeout=300,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["adapter"]["version"])

    return make
