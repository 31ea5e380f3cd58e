"""Typed settings of the serving layer (one pydantic model, documented fields, validated up front).

`ServingConfig` is what `serving.app.build_app` takes (a Serve config YAML passes the same fields as
`args`), and what `tuneloop serve` builds from its settings and flags. The models derive from
`common.settings.ConfigModel`: unknown keys are errors (field docs here are `description=`).

Secrets can stay out of the YAML: each comes from the setting, else an environment variable, else a
file named by `<VAR>_FILE` (a mounted Kubernetes/Docker secret):

* admin token      - `admin_token` | `TUNELOOP_ADMIN_TOKEN` | `TUNELOOP_ADMIN_TOKEN_FILE`
* inference keys   - `api_keys` + `TUNELOOP_API_KEYS` (comma separated) + `TUNELOOP_API_KEYS_FILE`
  (one key per line, `#` comments); all sources are merged
* database URL     - `database_url` | `TUNELOOP_DATABASE_URL` | `TUNELOOP_DATABASE_URL_FILE`

A `*_FILE` variable that names a missing or empty file is an error (never a silently open API).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from common.home import tuneloop_home
from common.settings import ConfigModel

DEFAULT_MAX_TOKENS = 256
"""Tokens a request may generate when it names no `max_tokens` (chat; `ServingConfig.default_max_tokens`)."""
POLL_INTERVAL_S = 0.2
"""Seconds between polls of the registry's generation (`ServingConfig.poll_interval_s`)."""


class SecretSourceError(ValueError):
    """A secret's source (environment variable or `*_FILE`) is missing, empty or inconsistent."""


def _read_secret_file(var: str) -> str | None:
    """The content of the file named by `$var`, stripped; None when `$var` is unset."""
    path = os.environ.get(var)
    if not path:
        return None
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretSourceError(f"${var} names {str(file)!r}, which cannot be read: {exc.strerror}") from exc
    if not text:
        raise SecretSourceError(f"${var} names {str(file)!r}, which is empty")
    return text


def _secret(value: str | None, var: str) -> str | None:
    """`value`, else `$var`, else the content of the file named by `$var_FILE`."""
    if value:
        return value
    if env := os.environ.get(var, "").strip():
        return env
    return _read_secret_file(f"{var}_FILE")


class RateLimitSettings(ConfigModel):
    """Token bucket per API key (per client IP when no keys are configured), in each replica."""

    requests_per_minute: Annotated[float, Field(ge=0)] = Field(
        0, description="sustained rate per key/IP; 0 = no rate limit"
    )
    burst: Annotated[int, Field(ge=1)] | None = Field(
        None, description="bucket size (requests allowed at once); default = requests_per_minute"
    )
    trust_forwarded_for: bool = Field(
        False, description="key anonymous clients by the first X-Forwarded-For address (behind a proxy)"
    )
    max_clients: Annotated[int, Field(ge=16)] = Field(
        10_000, description="buckets kept per replica (least recently used are dropped)"
    )

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute > 0


class EngineSettings(ConfigModel):
    kind: Literal["vllm", "fake"] = Field(
        "vllm", description="'vllm' (real); 'fake' only for tests/demos of the API"
    )
    max_model_len: Annotated[int, Field(ge=128, le=131072)] = 2048
    max_loras: Annotated[int, Field(ge=1, le=64)] = 4
    max_lora_rank: Annotated[int, Field(ge=1, le=512)] = 16
    max_cpu_loras: int | None = None
    scheduling_policy: Literal["priority", "fcfs"] = Field(
        "priority",
        description="vLLM's scheduler: 'priority' lets the service's control generations (staging smoke "
        "tests) overtake queued client requests, so swap time does not grow with load; client requests keep "
        "first-come-first-served order among themselves",
    )
    structured_outputs_backend: Literal["xgrammar", "guidance"] = Field(
        "xgrammar",
        description="vLLM's structured-output backend for every constrained request (response_format, "
        "forced tool calls, structured_outputs): 'xgrammar' (fast JSON schemas, EBNF grammars, regex) or "
        "'guidance' (llguidance: more JSON-schema features, Lark grammars); a constraint the backend cannot "
        "compile is a 400. vLLM's 'auto' is not offered: its engine compiles every request with the backend "
        "of the first constrained request, so auto's per-request fallback fails inside the engine",
    )
    stream_interval: Annotated[int, Field(ge=1, le=1024)] = Field(
        1,
        description="streamed answers send a chunk every this many tokens (vLLM's --stream-interval; the "
        "first and last at once; a request's own stream_interval can only raise it): fewer chunks for Ray "
        "to carry from the replica to the proxy (measured on 2 CPU cores with 4: the same throughput "
        "ratio to bare vLLM, less added time to first token; docs/deploy.md)",
    )
    tool_call_parser: str | None = Field(
        None,
        description="vLLM tool parser that reads tool calls out of answers for `tool_choice: auto` "
        "(e.g. hermes, llama3_json, mistral); default: hermes when the chat template uses <tool_call>, "
        "else none (auto is then refused with a 400; required and named tool choices work for any model)",
    )
    dtype: str = Field("auto", description="'auto' = float32 on CPU, bfloat16 on CUDA")
    kv_cache_gib: Annotated[int, Field(ge=1)] = 2
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85
    max_num_seqs: Annotated[int, Field(ge=1)] = 64
    max_num_batched_tokens: Annotated[int, Field(ge=16)] | None = Field(
        None,
        description="tokens one engine step may process (vLLM's chunked-prefill budget); a smaller budget "
        "splits long or bursty prefills over several steps, so decoding streams and control calls (adapter "
        "loads, swaps) wait at most one short step; default: 128 on CPU (measured best there), vLLM's own "
        "on CUDA",
    )
    seed: int = 0
    cpu_partition: Literal["auto", "off"] = Field(
        "auto",
        description="CPU engines: with several replicas on a one-node Ray cluster, give each replica's "
        "engine its own share of the cores (auto) instead of every engine binding to all of them (off); "
        "an operator's VLLM_CPU_OMP_THREADS_BIND wins",
    )


class ServingConfig(ConfigModel):
    base_model: str = Field(
        "default", description="'default' (SmolLM2-135M-Instruct) or a local HF model folder"
    )
    served_model_id: str | None = Field(
        None, description="model id clients use for the base; default: folder name"
    )
    home: Path = Field(default_factory=tuneloop_home, description="state folder (models, registry, database)")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<home>/tuneloop.db")
    registry_root: str | None = Field(
        None, description="adapter store: folder or fsspec URL; default <home>/registry"
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    num_replicas: Annotated[int, Field(ge=1, le=64)] = 1
    replica_num_cpus: Annotated[float, Field(gt=0)] = 0.5
    replica_num_gpus: float | None = Field(None, description="None = 1 when the cluster has GPUs, else 0")
    max_ongoing_requests: Annotated[int, Field(ge=1)] = Field(
        128,
        description="requests one replica takes at once (Ray Serve's max_ongoing_requests); with several "
        "replicas and the routing header, also when a replica holding the version counts as busy and "
        "Serve sends the request to another (lower it to spread a hot version, see docs/deploy.md)",
    )
    adapter_routing: bool = Field(
        True,
        description="each replica reports the adapter versions it holds to Ray Serve's router, so that "
        "with several replicas a request carrying the header `serve_multiplexed_model_id: name@<12 hex>` "
        "goes to a replica holding that version (a cold one to a replica holding fewest) and the replicas "
        "hold different versions; requests without the header are routed as before; off: no reports (the "
        "header then brings no preference; see serving/multiplex.py)",
    )
    admin_token: str | None = Field(
        None, description="bearer token for /admin (or $TUNELOOP_ADMIN_TOKEN[_FILE]); none = admin API off"
    )
    api_keys: list[str] = Field(
        default_factory=list,
        description="inference keys (+ $TUNELOOP_API_KEYS[_FILE]); none anywhere = inference API open",
    )
    admin_token_as_api_key: bool = Field(
        False, description="also accept the admin token on the inference API (off: the two never mix)"
    )
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    max_messages: Annotated[int, Field(ge=1)] = Field(256, description="messages per chat request")
    max_prompt_chars: Annotated[int, Field(ge=1)] = Field(
        200_000, description="characters of prompt text per request (all messages / prompts)"
    )
    log_format: Literal["text", "json"] | None = Field(
        None, description="replica log format; default $TUNELOOP_LOG_FORMAT, else text"
    )
    access_log: bool = Field(False, description="log one line per HTTP request (logger tuneloop.access)")
    registry_storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for a remote registry_root, e.g. {endpoint_url: http://minio:9000}; "
        "prefer the provider's own credential env vars (AWS_ACCESS_KEY_ID...) to keys here",
    )
    adapter_import_roots: list[str] = Field(
        default_factory=list,
        description="folders the admin API may register adapters from (+ <registry>/incoming)",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    request_log_max_buffer: Annotated[int, Field(ge=1)] = Field(
        100_000,
        description="request-log records held in memory while the database is unreachable (bounds memory; "
        "beyond it records go to the spill folder, see request_log_spill_dir)",
    )
    request_log_spill_dir: Path | None = Field(
        None,
        description="folder for request-log records beyond the in-memory buffer during a database outage "
        "(replayed when it is back, also by the next process); default <home>/request-log-spill",
    )
    request_log_max_spill_bytes: Annotated[int, Field(ge=0)] = Field(
        1 << 30,
        description="cap on the spill folder (bounds disk); past it records are dropped and counted in "
        "tuneloop_request_log_dropped; 0 turns spilling off",
    )
    adapter_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    poll_interval_s: Annotated[float, Field(gt=0)] = POLL_INTERVAL_S
    engine_check_refresh_s: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="longest time between two checks of which adapters the engine still holds when "
        "nothing was loaded or evicted meanwhile (the engine evicts only to make room for a load, so the "
        "check runs after each load anyway); each check keeps vLLM's worker busy-polling for about a "
        "second, so 0 (check every heartbeat) costs an idle replica a whole CPU core",
    )
    preload_new_versions: bool = Field(
        True,
        description="load and smoke-test an adapter version registered while the service runs as soon as "
        "a replica sees it, into a free slot only (nothing is evicted for it): a later swap finds it "
        "resident instead of loading it under traffic, and weights the engine refuses are rejected right "
        "after registration; false: versions load when a swap or a request first needs them",
    )
    default_max_tokens: Annotated[int, Field(ge=1)] = DEFAULT_MAX_TOKENS
    swap_timeout_s: Annotated[float, Field(gt=0)] = 120.0

    def resolved_database_url(self) -> str:
        url = _secret(self.database_url, "TUNELOOP_DATABASE_URL")
        return url or f"sqlite:///{self.home / 'tuneloop.db'}"

    def resolved_request_log_spill_dir(self) -> Path | None:
        if self.request_log_max_spill_bytes == 0:
            return None
        return self.request_log_spill_dir or self.home / "request-log-spill"

    def resolved_registry_root(self) -> str:
        return self.registry_root or str(self.home / "registry")

    def resolved_admin_token(self) -> str | None:
        return _secret(self.admin_token, "TUNELOOP_ADMIN_TOKEN")

    def resolved_api_keys(self) -> list[str]:
        """Inference keys from the setting, `$TUNELOOP_API_KEYS` and `$TUNELOOP_API_KEYS_FILE` (merged).

        The admin token is added only with `admin_token_as_api_key`; configured as an inference key
        otherwise, it is refused (an inference key must never be the admin credential).
        """
        keys = [k.strip() for k in self.api_keys]
        keys += os.environ.get("TUNELOOP_API_KEYS", "").split(",")
        if text := _read_secret_file("TUNELOOP_API_KEYS_FILE"):
            keys += [line.split("#", 1)[0] for line in text.splitlines()]
        unique = list(dict.fromkeys(k.strip() for k in keys if k.strip()))
        admin = self.resolved_admin_token()
        if admin and admin in unique:
            raise SecretSourceError(
                "the admin token is also listed as an inference API key; use a separate key "
                "(or set admin_token_as_api_key: true to let the admin token call the inference API)"
            )
        if admin and self.admin_token_as_api_key:
            unique.append(admin)
        return unique

    def resolved_log_format(self) -> Literal["text", "json"]:
        fmt = self.log_format or os.environ.get("TUNELOOP_LOG_FORMAT", "text").strip().lower() or "text"
        if fmt not in ("text", "json"):
            raise ValueError(f"$TUNELOOP_LOG_FORMAT must be 'text' or 'json', not {fmt!r}")
        return "json" if fmt == "json" else "text"
