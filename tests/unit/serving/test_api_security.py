"""Security of the HTTP surface through the real Litestar app on the fake engine: inference keys vs the
admin token, secrets from env/files, rate limiting, request size limits, request ids."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from serving.api.app import Admin, RequestLimits, build_http_app
from serving.api.ratelimit import TokenBucketLimiter
from serving.config import RateLimitSettings, SecretSourceError, ServingConfig
from serving.core import CoreConfig, ServingCore
from serving.engine.fake import FakeEngine
from tuneloop.settings import SettingsError, load_settings

ADMIN = "admin-token-0123456789"
KEY_A = "sk-inference-aaaaaaaa"
KEY_B = "sk-inference-bbbbbbbb"


class _EmptyRegistry:
    def list(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


def _app(**kw: Any) -> Any:
    core = ServingCore(FakeEngine("fake-base", max_model_len=64), None, CoreConfig(base_id="fake-base"))
    asyncio.run(core.start())
    admin = Admin(_EmptyRegistry(), ADMIN, import_roots=(), swap_timeout_s=1)  # type: ignore[arg-type]
    return build_http_app(core, admin=admin, **kw)


@pytest.fixture()
def keyed() -> Iterator[TestClient]:
    with TestClient(_app(api_keys=[KEY_A, KEY_B])) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def chat(**kw: object) -> dict[str, object]:
    body: dict[str, object] = {"model": "fake-base", "messages": [{"role": "user", "content": "hello"}]}
    body.update(kw)
    return body


# ---------------------------------------------------------------------------------------------- keys


def test_inference_keys_never_open_the_admin_api(keyed: TestClient) -> None:
    assert keyed.post("/v1/chat/completions", json=chat(), headers=bearer(KEY_A)).status_code == 200
    assert keyed.get("/v1/models", headers=bearer(KEY_B)).status_code == 200
    r = keyed.get("/admin/adapters", headers=bearer(KEY_A))
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert keyed.get("/admin/adapters", headers=bearer(ADMIN)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, bearer(ADMIN), bearer("wrong"), bearer(KEY_A[:-1]), {"authorization": KEY_A}, bearer("")],
)
def test_inference_api_refuses_anything_but_an_inference_key(
    keyed: TestClient,
    headers: dict[str, str],
) -> None:
    r = keyed.post("/v1/chat/completions", json=chat(), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert keyed.post("/v1/feedback", json={"id": "x", "thumbs": 1}, headers=headers).status_code == 401


def _clear_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ADMIN_TOKEN", "API_KEYS", "DATABASE_URL", "LOG_FORMAT"):
        monkeypatch.delenv(f"TUNELOOP_{var}", raising=False)
        monkeypatch.delenv(f"TUNELOOP_{var}_FILE", raising=False)


def test_secrets_come_from_settings_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_secret_env(monkeypatch)
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# team keys\n{KEY_B}\n\n  key-from-file-3  # ci\n")
    (tmp_path / "admin").write_text(ADMIN + "\n")
    (tmp_path / "db").write_text("postgresql+psycopg://tl:s3cr%40t@db:5432/tl\n")
    monkeypatch.setenv("TUNELOOP_API_KEYS", f" {KEY_A} ,,key-from-env-2")
    monkeypatch.setenv("TUNELOOP_API_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("TUNELOOP_ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    monkeypatch.setenv("TUNELOOP_DATABASE_URL_FILE", str(tmp_path / "db"))
    config = ServingConfig(home=tmp_path, api_keys=[KEY_A, "key-from-yaml"])
    assert config.resolved_api_keys() == [KEY_A, "key-from-yaml", "key-from-env-2", KEY_B, "key-from-file-3"]
    assert config.resolved_admin_token() == ADMIN
    assert config.resolved_database_url() == "postgresql+psycopg://tl:s3cr%40t@db:5432/tl"
    # the setting wins over the environment; the environment over the file
    monkeypatch.setenv("TUNELOOP_DATABASE_URL", "sqlite:////env.db")
    assert config.resolved_database_url() == "sqlite:////env.db"
    explicit = ServingConfig(home=tmp_path, database_url="sqlite:////x.db", admin_token="yaml-token")
    assert explicit.resolved_database_url() == "sqlite:////x.db"
    assert explicit.resolved_admin_token() == "yaml-token"


def test_defaults_without_any_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_secret_env(monkeypatch)
    config = ServingConfig(home=tmp_path)
    assert config.resolved_api_keys() == []
    assert config.resolved_admin_token() is None
    assert config.resolved_database_url() == f"sqlite:///{tmp_path / 'tuneloop.db'}"
    assert config.resolved_log_format() == "text"


@pytest.mark.parametrize(
    "var", ["TUNELOOP_API_KEYS_FILE", "TUNELOOP_ADMIN_TOKEN_FILE", "TUNELOOP_DATABASE_URL_FILE"]
)
def test_a_missing_or_empty_secret_file_is_an_error_not_an_open_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    _clear_secret_env(monkeypatch)
    monkeypatch.setenv(var, str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="cannot be read"):
        load_settings(overrides={"serving.home": str(tmp_path)})
    (tmp_path / "missing").write_text("  \n")
    with pytest.raises(SecretSourceError, match="empty"):
        config = ServingConfig(home=tmp_path)
        config.resolved_api_keys()
        config.resolved_database_url()


def test_admin_token_as_inference_key_only_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_secret_env(monkeypatch)
    with pytest.raises(SecretSourceError, match="admin token is also listed"):
        ServingConfig(home=tmp_path, admin_token=ADMIN, api_keys=[KEY_A, ADMIN]).resolved_api_keys()
    monkeypatch.setenv("TUNELOOP_API_KEYS", ADMIN)
    monkeypatch.setenv("TUNELOOP_ADMIN_TOKEN", ADMIN)
    with pytest.raises(SettingsError, match="admin token is also listed"):
        load_settings(overrides={"serving.home": str(tmp_path)})
    monkeypatch.delenv("TUNELOOP_API_KEYS")
    config = ServingConfig(home=tmp_path, api_keys=[KEY_A], admin_token_as_api_key=True)
    assert config.resolved_api_keys() == [KEY_A, ADMIN]
    with TestClient(_app(api_keys=config.resolved_api_keys())) as c:
        assert c.post("/v1/chat/completions", json=chat(), headers=bearer(ADMIN)).status_code == 200


def test_bad_log_format_is_a_settings_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_secret_env(monkeypatch)
    monkeypatch.setenv("TUNELOOP_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings(overrides={"serving.home": str(tmp_path)})
    monkeypatch.setenv("TUNELOOP_LOG_FORMAT", "JSON")
    assert ServingConfig(home=tmp_path).resolved_log_format() == "json"


# ---------------------------------------------------------------------------------------------- rate limits


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_and_says_when_to_retry() -> None:
    clock = _Clock()
    limiter = TokenBucketLimiter(RateLimitSettings(requests_per_minute=30, burst=2), clock=clock)
    assert [limiter.acquire("a").allowed for _ in range(3)] == [True, True, False]
    refused = limiter.acquire("a")
    assert refused.retry_after_s == 2 and refused.remaining == 0 and refused.limit == 2  # 0.5 token/s
    assert limiter.acquire("b").allowed  # its own bucket
    clock.t += 2.0
    assert limiter.acquire("a").allowed and not limiter.acquire("a").allowed
    clock.t += 3600
    assert [limiter.acquire("a").allowed for _ in range(3)] == [True, True, False]  # capped at burst


def test_token_bucket_memory_is_bounded() -> None:
    limiter = TokenBucketLimiter(RateLimitSettings(requests_per_minute=1, burst=1, max_clients=16))
    for i in range(1000):
        limiter.acquire(f"ip:10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 16
    with pytest.raises(ValueError):
        TokenBucketLimiter(RateLimitSettings())


def test_rate_limit_per_key_with_openai_429(keyed: TestClient) -> None:
    with TestClient(
        _app(api_keys=[KEY_A, KEY_B], rate_limit=RateLimitSettings(requests_per_minute=6, burst=2))
    ) as c:
        for _ in range(2):
            assert c.post("/v1/chat/completions", json=chat(), headers=bearer(KEY_A)).status_code == 200
        r = c.post("/v1/chat/completions", json=chat(), headers=bearer(KEY_A) | {"x-request-id": "trace-1"})
        assert r.status_code == 429
        assert r.json() == {
            "error": {
                "message": r.json()["error"]["message"],
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        assert int(r.headers["retry-after"]) == 10  # 0.1 token/s
        assert r.headers["x-ratelimit-limit-requests"] == "2"
        assert r.headers["x-request-id"] == "trace-1"
        assert c.get("/v1/models", headers=bearer(KEY_A)).status_code == 429  # every /v1 route counts
        assert c.post("/v1/chat/completions", json=chat(), headers=bearer(KEY_B)).status_code == 200
        for path in ("/health", "/ready", "/metrics"):  # probes and scrapes are never limited
            assert all(c.get(path).status_code == 200 for _ in range(5))
        metrics = c.get("/metrics").text
        assert re.search(r'tuneloop_rate_limited_total\{kind="key",replica="[^"]+"\} 2.0', metrics)


def test_rate_limit_per_ip_without_keys() -> None:
    with TestClient(_app(rate_limit=RateLimitSettings(requests_per_minute=60, burst=1))) as c:
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200
        r = c.post("/v1/chat/completions", json=chat(), headers=bearer("made-up-key"))
        assert r.status_code == 429 and r.headers["retry-after"] == "1"  # a made-up key is still that IP
        metrics = c.get("/metrics").text
        assert re.search(r'tuneloop_rate_limited_total\{kind="ip",replica="[^"]+"\} 1.0', metrics)


def test_forwarded_for_is_used_only_when_trusted() -> None:
    settings = RateLimitSettings(requests_per_minute=60, burst=1)
    for trusted, second_status in ((False, 429), (True, 200)):
        with TestClient(_app(rate_limit=settings.model_copy(update={"trust_forwarded_for": trusted}))) as c:
            fwd = {"x-forwarded-for": "203.0.113.7, 10.0.0.1"}
            assert c.get("/v1/models", headers=fwd).status_code == 200
            other = {"x-forwarded-for": "203.0.113.8"}
            assert c.get("/v1/models", headers=other).status_code == second_status


# ---------------------------------------------------------------------------------------------- size limits


def test_request_size_limits_are_clear_400s() -> None:
    with TestClient(_app(limits=RequestLimits(max_messages=3, max_prompt_chars=40))) as c:
        many = [{"role": "user", "content": "hi"}] * 4
        r = c.post("/v1/chat/completions", json=chat(messages=many))
        assert r.status_code == 400
        assert r.json()["error"] | {"message": ""} == {
            "message": "",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "too_many_messages",
        }
        assert "at most 3" in r.json()["error"]["message"]
        long = [{"role": "system", "content": "x" * 30}, {"role": "user", "content": "y" * 11}]
        r = c.post("/v1/chat/completions", json=chat(messages=long))
        assert r.status_code == 400 and r.json()["error"]["code"] == "prompt_too_long"
        assert "41 characters" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={"model": "fake-base", "prompt": ["a" * 20, "b" * 21]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert c.post("/v1/completions", json={"model": "fake-base", "prompt": "a b c"}).status_code == 200


def test_body_over_max_body_bytes_is_413_before_parsing() -> None:
    with TestClient(_app(limits=RequestLimits(max_body_bytes=2048))) as c:
        r = c.post(
            "/v1/completions", content=b"{" + b" " * 4096, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------------------------- request ids


def test_request_id_is_echoed_generated_or_replaced() -> None:
    with TestClient(_app()) as c:
        r = c.post("/v1/chat/completions", json=chat(), headers={"x-request-id": "client-42.a:b"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "client-42.a:b"
        assert r.json()["id"].startswith("chatcmpl-")  # the completion keeps its own id
        r = c.post("/v1/chat/completions", json=chat())
        assert r.headers["x-request-id"] == r.json()["id"]  # no client id: the completion id names it
        for bad in ("has space", "x" * 129, "new\\nline", "<script>", "-leading"):
            r = c.get("/v1/models", headers={"x-request-id": bad})
            assert r.headers["x-request-id"].startswith("req-") and len(r.headers["x-request-id"]) == 36
        r = c.post("/v1/chat/completions", json=chat(model="nope"), headers={"x-request-id": "err-1"})
        assert r.status_code == 404 and r.headers["x-request-id"] == "err-1"
        r = c.get("/no/such/route", headers={"x-request-id": "err-2"})
        assert r.status_code == 404 and r.headers["x-request-id"] == "err-2"
        assert c.get("/health").headers["x-request-id"].startswith("req-")
        stream = c.post("/v1/chat/completions", json=chat(stream=True), headers={"x-request-id": "s-1"})
        assert stream.status_code == 200 and stream.headers["x-request-id"] == "s-1"
        assert json.loads(stream.text.split("data: ")[1])["id"].startswith("chatcmpl-")
