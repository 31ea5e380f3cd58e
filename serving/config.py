"""Typed settings of the serving layer (one pydantic model, documented fields, validated up front).

`ServingConfig` is what `serving.app.build_app` takes (a Serve config YAML passes the same fields as
`args`), and what `tuneloop serve` builds from its settings and flags. Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


def default_home() -> Path:
    return Path(os.environ.get("TUNELOOP_HOME", Path.home() / ".cache" / "tuneloop")).expanduser()


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["vllm", "fake"] = Field(
        "vllm", description="'vllm' (real); 'fake' only for tests/demos of the API"
    )
    max_model_len: Annotated[int, Field(ge=128, le=131072)] = 2048
    max_loras: Annotated[int, Field(ge=1, le=64)] = 4
    max_lora_rank: Annotated[int, Field(ge=1, le=512)] = 16
    max_cpu_loras: int | None = None
    dtype: str = Field("auto", description="'auto' = float32 on CPU, bfloat16 on CUDA")
    kv_cache_gib: Annotated[int, Field(ge=1)] = 2
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85
    max_num_seqs: Annotated[int, Field(ge=1)] = 64
    seed: int = 0


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        "default", description="'default' (SmolLM2-135M-Instruct) or a local HF model folder"
    )
    served_model_id: str | None = Field(
        None, description="model id clients use for the base; default: folder name"
    )
    home: Path = Field(default_factory=default_home, description="state folder (models, registry, database)")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<home>/tuneloop.db")
    registry_root: str | None = Field(
        None, description="adapter store: folder or fsspec URL; default <home>/registry"
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    num_replicas: Annotated[int, Field(ge=1, le=64)] = 1
    replica_num_cpus: Annotated[float, Field(gt=0)] = 0.5
    replica_num_gpus: float | None = Field(None, description="None = 1 when the cluster has GPUs, else 0")
    max_ongoing_requests: Annotated[int, Field(ge=1)] = 128
    admin_token: str | None = Field(None, description="bearer token for /admin (env TUNELOOP_ADMIN_TOKEN)")
    api_keys: list[str] = Field(default_factory=list, description="inference keys; empty = open")
    adapter_import_roots: list[str] = Field(
        default_factory=list,
        description="folders the admin API may register adapters from (+ <registry>/incoming)",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    adapter_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    poll_interval_s: Annotated[float, Field(gt=0)] = 0.2
    default_max_tokens: Annotated[int, Field(ge=1)] = 256
    swap_timeout_s: Annotated[float, Field(gt=0)] = 120.0

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tuneloop.db'}"

    def resolved_registry_root(self) -> str:
        return self.registry_root or str(self.home / "registry")

    def resolved_admin_token(self) -> str | None:
        if self.admin_token:
            return self.admin_token
        if token := os.environ.get("TUNELOOP_ADMIN_TOKEN"):
            return token
        token_file = os.environ.get("TUNELOOP_ADMIN_TOKEN_FILE")
        if token_file and Path(token_file).is_file():
            return Path(token_file).read_text().strip() or None
        return None
