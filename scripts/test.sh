#!/usr/bin/env bash
# Run the test suite: set up .venv (idempotent, see bootstrap.sh), then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/unit -x`).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
.venv/bin/python -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no test: that is not a failure of the code under test.
if [ "$rc" -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi
exit "$rc"
