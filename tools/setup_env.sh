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
#   MAX_JOBS          parallel compile jobs when mmcv is built from source (default: nproc)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SEC_MM_VENV:-$ROOT/.venv}
MMCV_WHEEL_DIR=${MMCV_WHEEL_DIR:-$ROOT/../shared/wheels}
MMCV_VERSION=2.1.0
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi

log() { printf '[setup_env] %s\n' "$*" >&2; }

# Only the interpreter's path goes to stdout (callers capture it); everything else to stderr.
exec 3>&1 1>&2

# Everything that decides the environment's content; a change to any of them reinstalls.
fingerprint=$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)
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

# mmcv: the package registries only have its source, so it is either a matching prebuilt
# wheel (CPU ops, this Python and torch) or compiled here; with CUDA (a GPU and nvcc) it is
# always compiled so the CUDA ops are built too.
mmcv_ops_work() {
  "$VPY" - <<'EOF' >/dev/null 2>&1
import torch, mmcv
from mmcv.ops import nms, RoIAlign
assert mmcv.__version__ == '2.1.0', mmcv.__version__
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
if torch.cuda.is_available():
    nms(boxes.cuda(), torch.tensor([0.9, 0.8]).cuda(), 0.5)
EOF
}

with_cuda=$("$VPY" -c 'import torch, shutil; print(int(torch.cuda.is_available() and shutil.which("nvcc") is not None))')

if mmcv_ops_work; then
  log "mmcv $MMCV_VERSION with compiled ops already installed"
else
  installed=0
  if [ "$with_cuda" = 0 ]; then
    tag=$("$VPY" -c 'import sys, platform, torch; print(f"cp{sys.version_info[0]}{sys.version_info[1]}", platform.machine(), torch.__version__.split("+")[0])')
    read -r pytag arch torchver <<<"$tag"
    wheel="$MMCV_WHEEL_DIR/mmcv-$MMCV_VERSION-$pytag-$pytag-linux_$arch.whl"
    # The prebuilt wheel was compiled against torch 2.14.1; it fits nothing else.
    if [ -f "$wheel" ] && [ "$torchver" = "2.14.1" ]; then
      log "installing prebuilt $wheel"
      pip_install --no-deps --force-reinstall "$wheel" && mmcv_ops_work && installed=1 \
        || log "the prebuilt wheel does not work here; building from source instead"
    fi
  fi
  if [ "$installed" = 0 ]; then
    build=$(mktemp -d)
    log "building mmcv $MMCV_VERSION with ops from source in $build (about 30 min on 2 cores; CUDA ops: $with_cuda)"
    "$VPY" -m pip download --disable-pip-version-check --no-deps --no-binary :all: -d "$build" "mmcv==$MMCV_VERSION"
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    # torch >= 2.14 headers need C++20; mmcv's setup.py hard-codes C++17 after CFLAGS.
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
    cuda_env=()
    [ "$with_cuda" = 1 ] && cuda_env=(FORCE_CUDA=1)
    # --no-cache-dir: pip's wheel cache ignores the torch version a wheel was built against.
    env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${cuda_env[@]}" \
      "$VPY" -m pip install --disable-pip-version-check --no-build-isolation --no-cache-dir --no-deps "$build/mmcv-$MMCV_VERSION"
    rm -rf "$build"
    mmcv_ops_work || { log "mmcv was built but its ops do not run"; exit 1; }
  fi
fi

pip_install --no-deps -e "$ROOT"
"$VPY" -m pip check >&2 || log "pip check reported the conflicts above"

echo "$fingerprint" >"$stamp"
log "environment ready in $(( $(date +%s) - start )) s: $VENV"
echo "$VPY" >&3
