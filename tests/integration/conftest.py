"""One real tuneloop service per test session: `tuneloop serve` (Ray + Serve + vLLM on CPU) in a
subprocess on a free loopback port, with its own state folder; stopped with SIGTERM (graceful drain)
at the end. Fixtures: `tuneloop_service` (everything), `openai_base_url` (e.g. http://127.0.0.1:P/v1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "integration-admin-token"
START_TIMEOUT_S = float(os.environ.get("TUNELOOP_TEST_START_TIMEOUT", "900"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Service:
    url: str  # http://127.0.0.1:PORT
    home: Path
    config_path: Path
    admin_token: str
    base_model_path: Path
    base_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from serving.models import prepare_default_model

    return prepare_default_model()


@pytest.fixture(scope="session")
def tuneloop_service(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("tuneloop-home")
    (home / "registry" / "incoming").mkdir(parents=True)
    port = free_port()
    config = {
        "serving": {
            "base_model": str(default_model_path),
            "home": str(home),
            "admin_token": ADMIN_TOKEN,
            "replica_num_cpus": 0.5,
            "poll_interval_s": 0.1,
            "engine": {"max_model_len": 1024, "kv_cache_gib": 1, "max_loras": 4, "max_lora_rank": 16},
        },
        "port": port,
    }
    config_path = home / "tuneloop.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = home / "serve.log"
    env = {**os.environ, "TUNELOOP_CONFIG": str(config_path), "PYTHONUNBUFFERED": "1"}
    cli = shutil.which("tuneloop", path=str(Path(sys.executable).parent)) or "tuneloop"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [cli, "serve", "--port", str(port), "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    service = Service(
        f"http://127.0.0.1:{port}",
        home,
        config_path,
        ADMIN_TOKEN,
        default_model_path,
        default_model_path.name,
        proc,
        log_path,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tuneloop serve exited with {proc.returncode}:\n{service.log_tail()}")
            try:
                if httpx.get(f"{service.url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tuneloop serve not ready after {START_TIMEOUT_S:.0f} s:\n{service.log_tail()}")
            time.sleep(1)
        yield service
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


@pytest.fixture(scope="session")
def openai_base_url(tuneloop_service: Service) -> str:
    return tuneloop_service.v1
