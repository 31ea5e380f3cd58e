"""Test support: run a real `tuneloop serve` (Ray + Serve + vLLM) in a subprocess on a free loopback port,
with its own state folder, and stop it with SIGTERM (graceful drain). Used by the integration and
reliability suites; not used by the product code.

    with launch_service(home, base_model_path, num_replicas=2) as svc:
        httpx.get(f"{svc.url}/ready")

Also shared by the tests and the benchmarks: `postgres_schema` (a fresh, throw-away schema on a Postgres
server), `make_peft_adapter` (a real peft LoRA adapter of a base model, random weights), and for the request
log's tests `request_record` (a plausible logged request), `count_request_rows` and `wait_until`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = [
    "PostgresUnavailable",
    "Service",
    "ServiceStartError",
    "free_port",
    "launch_service",
    "make_peft_adapter",
    "count_request_rows",
    "postgres_schema",
    "request_record",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[1]


class ServiceStartError(RuntimeError):
    """The service exited or did not become ready in time (the message ends with its log tail)."""


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

    def stop(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM to `tuneloop serve` (it drains, then stops Ray), wait up to `timeout_s`, then SIGKILL
        whatever is left of its process group (e.g. a vLLM engine process orphaned by a killed replica);
        the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(30)
        return self.process.returncode


@contextmanager
def launch_service(
    home: Path,
    base_model_path: Path,
    *,
    admin_token: str = "test-admin-token",
    num_replicas: int = 1,
    serving: dict[str, Any] | None = None,
    start_timeout_s: float = 900.0,
) -> Iterator[Service]:
    """Start `tuneloop serve`, wait for /ready, yield, then stop it (SIGTERM drain)."""
    (home / "registry" / "incoming").mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings: dict[str, Any] = {
        "base_model": str(base_model_path),
        "home": str(home),
        "admin_token": admin_token,
        "replica_num_cpus": 0.5,
        "num_replicas": num_replicas,
        "poll_interval_s": 0.1,
        "engine": {"max_model_len": 1024, "kv_cache_gib": 1, "max_loras": 4, "max_lora_rank": 16},
    }
    settings.update(serving or {})
    config_path = home / "tuneloop.yaml"
    config_path.write_text(yaml.safe_dump({"serving": settings, "port": port}))
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
        admin_token,
        base_model_path,
        base_model_path.name,
        proc,
        log_path,
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise ServiceStartError(
                    f"tuneloop serve exited with {proc.returncode}:\n{service.log_tail()}"
                )
            try:
                if httpx.get(f"{service.url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"tuneloop serve not ready after {start_timeout_s:.0f} s:\n{service.log_tail()}"
                )
            time.sleep(1)
        yield service
    finally:
        service.stop()


class PostgresUnavailable(RuntimeError):
    """`postgres_schema` could not create its schema (the server is not reachable); the driver's error is
    the `__cause__`. Callers that need Postgres turn this into a skip."""


@contextmanager
def postgres_schema(url: str, prefix: str) -> Iterator[str]:
    """Create a fresh schema `<prefix><12 hex chars>` on the Postgres at `url`, yield its name, and drop it
    (CASCADE) afterwards, whatever happened inside. Raises `PostgresUnavailable` (nothing to drop) when the
    schema cannot be created; connecting gives up after 5 s.

        with postgres_schema(PG_URL, "tl_test_") as schema:
            engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except OperationalError as exc:
        admin.dispose()
        raise PostgresUnavailable(f"Postgres not reachable at {url}: {exc.orig}") from exc
    try:
        yield schema
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def make_peft_adapter(
    base: Path,
    out: Path,
    seed: int,
    r: int = 8,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    lora_b_std: float | None = 0.5,
) -> Path:
    """A real peft LoRA adapter of `base` (rank `r`, alpha 2r) with random non-zero weights, saved to `out`
    (without peft's README); returns `out`. `lora_b_std` re-draws the B matrices from N(0, std) so that
    greedy outputs visibly change; None keeps peft's own random init (`init_lora_weights=False`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), init_lora_weights=False)
    )
    if lora_b_std is not None:
        with torch.no_grad():
            for pname, param in peft_model.named_parameters():
                if "lora_B" in pname:
                    param.normal_(0.0, lora_b_std)
    peft_model.save_pretrained(str(out))
    for extra in out.glob("*.md"):
        extra.unlink()
    return out


def request_record(i: int, **kwargs: Any) -> Any:
    """A plausible `RequestRecord` number `i` (fields overridable)."""
    from serving.request_log import RequestRecord, encode_messages

    fields: dict[str, Any] = {
        "id": f"chatcmpl-{i:08d}",
        "endpoint": "chat.completions",
        "model_requested": "support",
        "served_name": "support",
        "served_version": "a" * 64,
        "prompt": encode_messages([{"role": "user", "content": f"question {i}"}]),
        "response": f"answer {i}",
        "status_code": 200,
        "latency_ms": 12.5,
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "finish_reason": "stop",
        "tags": {"slice": "billing", "i": i},
    }
    fields.update(kwargs)
    return RequestRecord(**fields)


def count_request_rows(db: Any) -> int:
    """Rows in `requests` of a `serving.store.Database`."""
    from sqlalchemy import func, select

    from common.log_schema import RequestRow

    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(RequestRow)) or 0)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll `predicate` every 10 ms; fail the test when it is not true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
