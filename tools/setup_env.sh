#!/usr/bin/env bash
# Creates (or reuses) the project environment in .venv: the exact versions of
# requirements/lock.txt (torch, the OpenMMLab stack, test tools), mmcv with compiled ops, and
# sec_mm in editable mode. Safe to run again: it does nothing when the
# environment already matches requirements/ and setup.py.
#
#   bash tools/setup_env.sh            # prints the path of the environment's python at the end
#
# Environment variables:
#   SEC_MM_VENV       where the environment lives (default: <repo>/.venv)
#   PYTHON            the interpreter that creates it (default: python3.11, else python3)
#   MMCV_WHEEL_DIR    folder searched for a prebuilt mmcv wheel (default: <repo>/../shared/wheels)
#   MMCV_CACHE_DIR    where tools/install_mmcv.sh keeps the mmcv wheels it compiles
#   MAX_JOBS          parallel compile jobs when mmcv is built from source (default: nproc)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SEC_MM_VENV:-$ROOT/.venv}
MMCV_WHEEL_DIR=${MMCV_WHEEL_DIR:-$ROOT/../shared/wheels}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi

log() { printf '[setup_env] %s\n' "$*" >&2; }

# Only the interpreter's path goes to stdout (callers capture it); everything else to stderr.
exec 3>&1 1>&2

# Everything that decides the environment's content; a change to any of them reinstalls.
fingerprint=$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" \
  "$ROOT/tools/install_mmcv.sh" | sha256sum | cut -d' ' -f1)
stamp="$VENV/.sec_mm_env"
VPY="$VENV/bin/python"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && [ -x "$VPY" ]; then
  log "environment up to date: $VENV"
  echo "$VPY" >&3
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VPY" ]; then
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

pip_install() { "$VPY" -m pip install --disable-pip-version-check "$@"; }

log "installing requirements/lock.txt (torch, mmengine, mmdet, mmseg, mmpretrain, ...)"
pip_install -r "$ROOT/requirements/lock.txt"

# mmcv 2.1.0 with compiled ops for this torch: a matching prebuilt or cached wheel, else
# compiled here (tools/install_mmcv.sh, the route the README gives users).
PYTHON="$VPY" MMCV_WHEEL_DIR="$MMCV_WHEEL_DIR" bash "$ROOT/tools/install_mmcv.sh"

pip_install --no-deps -e "$ROOT"
"$VPY" -m pip check >&2 || log "pip check reported the conflicts above"

echo "$fingerprint" >"$stamp"
log "environment ready in $(( $(date +%s) - start )) s: $VENV"
echo "$VPY" >&3
