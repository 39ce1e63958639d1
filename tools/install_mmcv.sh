#!/usr/bin/env bash
# Installs mmcv 2.1.0 with its compiled ops for the torch of an environment, for torch versions
# OpenMMLab publishes no mmcv 2.1.0 wheels for (newer than 2.1). The registries hold only
# mmcv's source, which does not build as pip builds it by default, so this script:
#   - reuses a wheel built earlier for exactly this Python, torch (and CUDA) version, kept in
#     $MMCV_CACHE_DIR/<key>/ (pip's own wheel cache ignores the torch version: never used);
#   - else takes a prebuilt wheel from $MMCV_WHEEL_DIR (the same <key>/ layout, or wheels lying
#     directly in it, taken only when their compiled ops load against this torch);
#   - else compiles the source: no build isolation (mmcv's setup.py needs the installed torch),
#     setuptools < 81 (it imports pkg_resources), C++20 for torch >= 2.14 headers (mmcv's
#     setup.py hard-codes C++17), CUDA ops with FORCE_CUDA=1 when a GPU and nvcc are there;
#     about 35 minutes on 2 cores for the CPU ops; the wheel is then cached;
# and checks mmcv.ops (nms, RoIAlign; on the GPU too when built with CUDA). It changes neither
# torch nor numpy; it installs setuptools < 81 when needed (mmengine imports pkg_resources
# at run time too) and mmcv's own small dependencies.
#
#   bash tools/install_mmcv.sh                     # into the environment of `python`
#   PYTHON=/path/to/venv/bin/python bash tools/install_mmcv.sh
#   bash tools/install_mmcv.sh --print-key         # the cache key of this environment only
#
# Environment variables:
#   PYTHON          interpreter of the target environment (default: python, else python3)
#   MMCV_CACHE_DIR  where built wheels are kept (default: ~/.cache/sec_mm/mmcv)
#   MMCV_WHEEL_DIR  a folder of prebuilt mmcv wheels to try before compiling (optional)
#   MAX_JOBS        parallel compile jobs (default: the number of CPUs)
#   FORCE_CUDA=1    compile the CUDA ops without a visible GPU (needs nvcc)
set -euo pipefail

case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  ''|--print-key) ;;
  *) echo "install_mmcv.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
MMCV_VERSION=2.1.0
PY=${PYTHON:-$(command -v python || command -v python3)}
CACHE_DIR=${MMCV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sec_mm/mmcv}
log() { printf '[install_mmcv] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }

"$PY" -c 'import torch' 2>/dev/null \
  || die "torch cannot be imported by $PY: install your torch first (PYTHON= picks another interpreter)"

# CUDA ops when the user asks (FORCE_CUDA=1) or when a GPU and nvcc are both there.
with_cuda=$("$PY" -c 'import os, shutil, torch
print(int(os.environ.get("FORCE_CUDA") == "1" or (torch.cuda.is_available() and torch.version.cuda is not None and shutil.which("nvcc") is not None)))')
if [ "$with_cuda" = 1 ]; then command -v nvcc >/dev/null || die "FORCE_CUDA=1 but nvcc is not on PATH"; fi

# One key per Python, platform, exact torch build and kind of ops: a wheel is reused only there.
read -r key torch_ge_214 <<<"$("$PY" - "$with_cuda" <<'EOF'
import platform, sys, torch
cuda = f'cuda{torch.version.cuda}' if sys.argv[1] == '1' else 'cpuops'
major, minor = (int(p) for p in torch.__version__.split('+')[0].split('.')[:2])
print(f'cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}-torch{torch.__version__}-{cuda}',
      int((major, minor) >= (2, 14)))
EOF
)"
if [ "${1:-}" = --print-key ]; then echo "$key"; exit 0; fi

ops_work() {  # mmcv 2.1.x imports and its compiled ops run (on the GPU too with CUDA ops)
  "$PY" - "$with_cuda" <<'EOF'
import sys
import torch
import mmcv
from mmcv.ops import RoIAlign, nms
assert mmcv.__version__.startswith('2.1.'), f'mmcv {mmcv.__version__}, not 2.1'
devices = ['cpu'] + (['cuda'] if sys.argv[1] == '1' else [])
for device in devices:
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]], device=device)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)
    assert keep.tolist() == [0, 2], keep
    rois = torch.tensor([[0., 0., 0., 4., 4.]], device=device)
    out = RoIAlign((2, 2), 1.0, 2)(torch.ones(1, 1, 8, 8, device=device), rois)
    assert out.shape == (1, 1, 2, 2) and torch.allclose(out, torch.ones_like(out)), out
print(f'mmcv {mmcv.__version__}: nms and RoIAlign run on {", ".join(devices)}')
EOF
}

if ops_work 2>/dev/null; then
  log "mmcv $MMCV_VERSION with compiled ops already works here; nothing to do"
  exit 0
fi

# setuptools < 81 keeps pkg_resources (mmcv's setup.py and mmengine import it).
if ! "$PY" -c 'import pkg_resources, setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) >= 81)' 2>/dev/null; then
  log "installing setuptools<81 (mmcv's build and mmengine import pkg_resources)"
  pip_ install 'setuptools<81'
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Whatever else pip installs (mmcv's dependencies) must leave torch and numpy where they are.
"$PY" - >"$work/constraints.txt" <<'EOF'
from importlib.metadata import PackageNotFoundError, version
for name in ('torch', 'numpy'):
    try:
        print(f'{name}=={version(name)}')
    except PackageNotFoundError:
        pass
print('setuptools<81')
EOF

install_wheel() {  # the wheel, then its dependencies
  pip_ install --no-cache-dir --no-deps --force-reinstall "$1" >&2 \
    && pip_ install --no-cache-dir -c "$work/constraints.txt" "mmcv==$MMCV_VERSION" >&2
}

ext_loads() {  # the wheel's compiled ops load against this torch (no undefined symbols)
  rm -rf "$work/probe" && mkdir "$work/probe"
  "$PY" -m zipfile -e "$1" "$work/probe" >/dev/null || return 1
  "$PY" - "$work/probe" <<'EOF' 2>/dev/null
import glob, importlib.util, sys
import torch  # noqa: F401  (the extension links against torch's libraries)
path, = glob.glob(f'{sys.argv[1]}/mmcv/_ext*.so')
importlib.util.module_from_spec(importlib.util.spec_from_file_location('mmcv._ext', path))
EOF
}

pytag=${key%%-*}
wheel=""
for candidate in "$CACHE_DIR/$key"/mmcv-$MMCV_VERSION-*.whl ${MMCV_WHEEL_DIR:+"$MMCV_WHEEL_DIR/$key"/mmcv-$MMCV_VERSION-*.whl}; do
  [ -f "$candidate" ] && { wheel=$candidate; log "reusing $wheel (built for $key)"; break; }
done
if [ -z "$wheel" ] && [ -n "${MMCV_WHEEL_DIR:-}" ] && [ "$with_cuda" = 0 ]; then
  for candidate in "$MMCV_WHEEL_DIR"/mmcv-$MMCV_VERSION-$pytag-*.whl; do
    [ -f "$candidate" ] || continue
    if ext_loads "$candidate"; then
      wheel=$candidate; log "using the prebuilt $wheel (its ops load against torch here)"; break
    fi
    log "skipping $candidate: its compiled ops do not load against this torch"
  done
fi

if [ -n "$wheel" ]; then
  if install_wheel "$wheel" && ops_work; then exit 0; fi
  log "$wheel does not work here; compiling mmcv instead"
fi

# Compile from the source.
log "compiling mmcv $MMCV_VERSION for $key (CUDA ops: $with_cuda; about 35 minutes on 2 cores for the CPU ops)"
pip_ download --no-deps --no-binary :all: --no-build-isolation -d "$work" "mmcv==$MMCV_VERSION" >&2
tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
src=$work/mmcv-$MMCV_VERSION
# torch >= 2.14 headers need C++20; mmcv's setup.py appends -std=c++17 after CFLAGS.
if [ "$torch_ge_214" = 1 ]; then sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"; fi
# torch compiles in parallel only with ninja; a private copy when the machine has none.
build_path=$PATH build_pythonpath=${PYTHONPATH:-}
if ! command -v ninja >/dev/null; then
  pip_ install --no-cache-dir --target "$work/ninja" ninja >&2
  build_path=$work/ninja/bin:$PATH build_pythonpath=$work/ninja${PYTHONPATH:+:$PYTHONPATH}
fi
cuda_env=(FORCE_CUDA=0)
[ "$with_cuda" = 1 ] && cuda_env=(FORCE_CUDA=1)
start=$(date +%s)
# --no-cache-dir: pip's wheel cache would keep this wheel under a key blind to torch's version.
env PATH="$build_path" PYTHONPATH="$build_pythonpath" MMCV_WITH_OPS=1 \
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${cuda_env[@]}" \
  "$PY" -m pip --disable-pip-version-check wheel --no-build-isolation --no-cache-dir --no-deps \
  -w "$work/dist" "$src" >&2
log "compiled in $(( ($(date +%s) - start) / 60 )) min"
built=$(ls "$work"/dist/mmcv-$MMCV_VERSION-*.whl)
mkdir -p "$CACHE_DIR/$key"
cp "$built" "$CACHE_DIR/$key/"
wheel=$CACHE_DIR/$key/$(basename "$built")
log "cached $wheel"
install_wheel "$wheel"
ops_work || die "mmcv was built and installed but its ops do not run (see above)"
