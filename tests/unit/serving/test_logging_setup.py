"""Structured logs: JSON lines with request ids, and secrets masked in every record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from serving.api.app import build_http_app
from serving.config import ServingConfig
from serving.core import CoreConfig, ServingCore
from serving.engine.fake import FakeEngine
from serving.logging_setup import (
    MASK,
    RequestContext,
    bind_request,
    configure_logging,
    configure_replica_logging,
    redact,
    register_database_url,
    register_secret,
)
from serving.registry.testing import SMOLLM2_MODULES
from serving.runtime import ServingRuntime


@pytest.fixture()
def json_log() -> Iterator[io.StringIO]:
    """tuneloop's JSON handler on the `tuneloop` logger, writing into a buffer (removed afterwards)."""
    buf = io.StringIO()
    logger = logging.getLogger("tuneloop")
    saved = (logger.level, logger.propagate)
    handler = configure_logging("json", logging.DEBUG, logger="tuneloop", stream=buf)
    yield buf
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_request_id_and_extra_fields(json_log: io.StringIO) -> None:
    log = logging.getLogger("tuneloop.test")
    log.info("outside %s", "any request")
    with bind_request(RequestContext("req-abc")):
        log.warning("inside %d", 7, extra={"served_by": "support@1234", "tokens": 3})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second, third = lines(json_log)
    assert first["message"] == "outside any request" and "request_id" not in first
    assert (
        first["level"] == "INFO"
        and first["logger"] == "tuneloop.test"
        and str(first["ts"]).endswith("+00:00")
    )
    assert second == second | {
        "message": "inside 7",
        "request_id": "req-abc",
        "served_by": "support@1234",
        "tokens": 3,
    }
    assert "RuntimeError: boom" in str(third["exc"])


def test_redaction_masks_registered_secrets_and_secret_patterns() -> None:
    register_secret("sk-live-registered-123")
    register_database_url("postgresql+psycopg://tuneloop:p%40ss-w0rd@db.internal:5432/tl")
    cases = {
        "key sk-live-registered-123 used": f"key {MASK} used",
        "Authorization: Bearer abc.def-ghi": f"Authorization: Bearer {MASK}",
        "{'authorization': 'Basic dXNlcjpwYXNz'}": f"{{'authorization': 'Basic {MASK}'}}",
        "x-api-key: abcdef": f"x-api-key: {MASK}",
        "sent bearer tok_123456 upstream": f"sent bearer {MASK} upstream",
        "postgresql+psycopg://tuneloop:p%40ss-w0rd@db.internal:5432/tl": (
            f"postgresql+psycopg://tuneloop:{MASK}@db.internal:5432/tl"
        ),
        "raw password p@ss-w0rd leaked": f"raw password {MASK} leaked",
        "s3://AKIA:wJalrXUt@bucket/x": f"s3://AKIA:{MASK}@bucket/x",
        '{"api_key": "abc123", "x": 1}': f'{{"api_key": "{MASK}", "x": 1}}',
        "password=hunter22&user=bob": f"password={MASK}&user=bob",
        "admin_token: t0k3n": f"admin_token: {MASK}",
        "plain: 42 tokens, max_tokens=5 tokens=3": "plain: 42 tokens, max_tokens=5 tokens=3",
    }
    for raw, masked in cases.items():
        assert redact(raw) == masked, raw


def test_no_secret_reaches_a_log_line(json_log: io.StringIO) -> None:
    secret = "sk-test-never-logged-9876"
    register_secret(secret)
    log = logging.getLogger("tuneloop.test")
    log.error("auth failed for %s", secret, extra={"header": f"Bearer {secret}"})
    try:
        raise ValueError(f"cannot connect with {secret}")
    except ValueError:
        log.exception("db error")
    log.warning("url %s", "postgresql://u:plain-pass-1@h/db")
    text = json_log.getvalue()
    assert secret not in text and "plain-pass-1" not in text
    records = lines(json_log)
    assert records[0]["message"] == f"auth failed for {MASK}" and records[0]["header"] == f"Bearer {MASK}"
    assert f"cannot connect with {MASK}" in str(records[1]["exc"])


def test_text_format_also_redacts_and_names_the_request() -> None:
    buf = io.StringIO()
    logger = logging.getLogger("tuneloop.textcheck")
    handler = configure_logging("text", logging.INFO, logger="tuneloop.textcheck", stream=buf)
    try:
        with bind_request(RequestContext("req-t1")):
            logger.info("token=%s", "abcdef123")
    finally:
        logger.removeHandler(handler)
    assert f"INFO tuneloop.textcheck [req-t1]: token={MASK}" in buf.getvalue()
    assert "abcdef123" not in buf.getvalue()


def test_every_log_line_of_a_request_has_its_id(json_log: io.StringIO) -> None:
    core = ServingCore(FakeEngine("fake-base", max_model_len=64), None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    with TestClient(build_http_app(core, access_log=True)) as c:
        body = {"model": "fake-base", "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=body, headers={"x-request-id": "trace-77"})
        assert r.status_code == 200
        r2 = c.get("/v1/models")
    access = [rec for rec in lines(json_log) if rec["logger"] == "tuneloop.access"]
    # (other libraries may add record attributes of their own, e.g. vLLM's `vllm_process_name` once it
    # has been imported in the process: compare our fields)
    expected = {
        "level": "INFO",
        "logger": "tuneloop.access",
        "message": "POST /v1/chat/completions 200",
        "request_id": "trace-77",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "duration_ms": 0,
        "client": "testclient",
    }
    got = access[0] | {"duration_ms": 0}
    assert got["ts"]
    assert {k: got.get(k) for k in expected} == expected
    assert access[1]["request_id"] == r2.headers["x-request-id"]


def test_replica_logging_json_owns_the_tuneloop_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("tuneloop")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        configure_replica_logging("json", access_log=True)
        ours = [h for h in logger.handlers if getattr(h, "_tuneloop", False)]
        assert len(ours) == 1 and logger.propagate is False
        configure_replica_logging("json")  # idempotent
        assert len([h for h in logger.handlers if getattr(h, "_tuneloop", False)]) == 1
        assert logging.getLogger("tuneloop.access").getEffectiveLevel() == logging.INFO
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
        logging.getLogger("tuneloop.access").setLevel(logging.NOTSET)


def test_runtime_registers_its_secrets_for_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setattr("serving.runtime.resolve_base_model", lambda spec: model)
    monkeypatch.setattr("serving.runtime.base_model_module_names", lambda path: set(SMOLLM2_MODULES))
    monkeypatch.setattr("serving.runtime.base_model_fingerprint", lambda path: "f" * 64)
    (tmp_path / "keys").write_text("file-key-0000000001\n")
    monkeypatch.setenv("TUNELOOP_API_KEYS_FILE", str(tmp_path / "keys"))
    monkeypatch.setenv("TUNELOOP_ADMIN_TOKEN", "env-admin-token-0001")
    config = ServingConfig(home=tmp_path / "home", engine={"kind": "fake"})
    rt = ServingRuntime.build(config, engine=FakeEngine("base", max_model_len=64), replica_id="r1")
    try:
        with TestClient(rt.http_app()) as c:
            c.blocking_portal.call(rt.start)
            body = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}
            ok = {"authorization": "Bearer file-key-0000000001"}
            admin = {"authorization": "Bearer env-admin-token-0001"}
            assert c.post("/v1/chat/completions", json=body, headers=ok).status_code == 200
            assert c.post("/v1/chat/completions", json=body, headers=admin).status_code == 401
            assert c.get("/admin/adapters", headers=ok).status_code == 401
            assert c.get("/admin/adapters", headers=admin).status_code == 200
            c.blocking_portal.call(rt.close)
    finally:
        rt.db.dispose()
    assert redact("key file-key-0000000001 / env-admin-token-0001") == f"key {MASK} / {MASK}"
