#!/usr/bin/env bash
# The whole test suite, in the project environment (created first if needed).
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$(bash "$ROOT/tools/setup_env.sh")
cd "$ROOT"
exec "$PY" -m pytest tests "$@"
