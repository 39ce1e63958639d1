#!/usr/bin/env bash
# The oldest supported torch: the op, layer, backbone and head tests on torch 2.1.2 with
# mmcv-lite (mmcv without compiled ops), in a second environment (.venv-torch2.1, about 5 GB,
# created on the first run from requirements/compat-torch2.1.txt).
#
#   bash tools/run_compat_tests.sh [pytest args]
#
# Environment variables: SEC_MM_COMPAT_VENV (default <repo>/.venv-torch2.1), PYTHON (the
# interpreter that creates it; default python3.11, else python3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SEC_MM_COMPAT_VENV:-$ROOT/.venv-torch2.1}
REQUIREMENTS=$ROOT/requirements/compat-torch2.1.txt
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi
log() { printf '[compat] %s\n' "$*" >&2; }

fingerprint=$(cat "$REQUIREMENTS" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
stamp="$VENV/.sec_mm_env"
# A stamp alone is not trusted: the interpreter must still be there (a half-deleted venv).
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && [ -x "$VENV/bin/python" ]; then
  log "environment up to date: $VENV"
else
  start=$(date +%s)
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
  "$VENV/bin/python" -m pip check >&2 || log "pip check reported the conflicts above"
  echo "$fingerprint" >"$stamp"
  log "environment ready in $(( $(date +%s) - start )) s: $VENV"
fi
"$VENV/bin/python" -c 'import torch, mmcv; print(f"[compat] torch {torch.__version__}, mmcv {mmcv.__version__} (no compiled ops)")' >&2

cd "$ROOT"
# sec_mm from this checkout; tests that need mmcv's compiled ops are left out.
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$VENV/bin/python" -m pytest \
  tests/test_ops tests/test_models/test_layers tests/test_models/test_backbones \
  tests/test_models/test_heads -m "not e2e and not mmcv_ops" -p no:cacheprovider "$@"
