#!/usr/bin/env bash
# Run the test suite: set up .venv (idempotent, see bootstrap.sh), then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
# Without arguments: ruff + mypy, then everything except the two-replica tests, then those in a second pytest
# session (each session starts its own vLLM service; two engines + the suite's service would not fit 2 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

run_pytest() {
  .venv/bin/python -m pytest "$@"
  local rc=$?
  # pytest exits 5 when it collected no test: that is not a failure of the code under test.
  if [ "$rc" -eq 5 ]; then echo "pytest: no tests collected"; return 0; fi
  return "$rc"
}

if [ "$#" -gt 0 ]; then
  run_pytest "$@"
  exit $?
fi
# Lint and types first (about 1.5 min): ruff and mypy clean is part of green.
.venv/bin/ruff check . && .venv/bin/ruff format --check . \
  && .venv/bin/mypy common serving training monitoring evals tuneloop benchmarks
lint=$?
run_pytest -m "not multireplica"
first=$?
run_pytest -m multireplica
second=$?
[ "$lint" -eq 0 ] && [ "$first" -eq 0 ] && [ "$second" -eq 0 ]
