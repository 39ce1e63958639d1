#!/usr/bin/env bash
# The CUDA tests and the GPU benchmark in one go, for a GPU machine without network (see
# DEVELOPERS.md).
#
# Such a machine has Python and torch with CUDA, but no OpenMMLab packages and no network:
# their pure-Python wheels travel with the working tree in the git-ignored .device_wheels/.
#
#   bash tools/misc/gpu_check.sh --prepare [WHEEL_DIR]  # here: fill .device_wheels/
#   bash tools/misc/gpu_check.sh                        # there: install, test, benchmark
#   bash tools/misc/gpu_check.sh --cpu                  # here: a dry run on CPU, tiny sizes
#   ... --skip-tests / --skip-bench / --skip-compile     # a rerun of one part
#
# The GPU run installs the wheels into $SEC_MM_SITE (default /tmp/sec_mm_site) and puts it on
# PYTHONPATH, runs `pytest tests/test_cuda -v`, then tools/analysis_tools/benchmark.py on CUDA
# under fp16 and under bf16 autocast (classifiers at batch 64 and 224; backbone forward+backward
# of SECViT-T, SECViT-T with cluster_size=98 and Swin-T at 2x512x512, 1x800x1344 and
# 1x1024x1024), then its torch.compile table under bf16 (SECViT-T eager against inductor, which
# emits Triton kernels there), each step under its own time limit: at most about 10 minutes in
# all. The CPU dry run benchmarks bf16 only (CPU float16 is very slow) at tiny sizes under
# CPU-sized limits. Everything is printed; the log, the pytest report and
# benchmarks/results.md with the new sections go to $OUT (default /tmp/sec_mm_gpu_check). The
# exit status is non-zero if a step failed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WHEELS=$ROOT/.device_wheels
PYTHON=${PYTHON:-python3}
SITE=${SEC_MM_SITE:-/tmp/sec_mm_site}
OUTDIR=${OUT:-/tmp/sec_mm_gpu_check}
TEST_TIMEOUT=${TEST_TIMEOUT:-200}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-}  # default: 120 s on the GPU, 600 s in a CPU dry run
COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-}  # default: 180 s on the GPU, 600 s in a CPU dry run
# mmengine finds `mmpretrain::` config bases through pkg_resources, which setuptools 81
# removed: this one travels too and is installed where the machine's setuptools lacks it.
SETUPTOOLS=setuptools==80.9.0

prepare() {
    local source=${1:-$ROOT/../shared/wheels/device}
    if ! ls "$source"/*.whl >/dev/null 2>&1; then
        echo "gpu_check.sh --prepare: no wheels in $source; give the folder that holds the" \
            "device wheels (shared/wheels/device beside the repository)." >&2
        return 2
    fi
    mkdir -p "$WHEELS"
    cp "$source"/*.whl "$WHEELS"/ &&
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$SETUPTOOLS" ||
        return 1
    ls "$WHEELS"
    du -sh "$WHEELS"
}

# The wheels to install here. A CPU dry run on another Python than 3.12 skips the compiled
# ones built for 3.12 (only mmdet needs them). pycocotools is left out beside transformers >= 5
# (the GPU machine has 5.x): with both, mmpretrain 1.2 imports its multimodal models, which
# raise TypeError under transformers 5, and `import mmpretrain.models` fails.
installable_wheels() {
    "$PYTHON" - "$WHEELS" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version


def installed(name):
    try:
        return Version(version(name))
    except PackageNotFoundError:
        return None


try:
    import pkg_resources  # noqa: F401
    has_pkg_resources = True
except ImportError:
    has_pkg_resources = False
transformers = installed('transformers')
supported = set(sys_tags())
for path in sorted(Path(sys.argv[1]).glob('*.whl')):
    name, _, _, tags = parse_wheel_filename(path.name)
    if name == 'setuptools' and has_pkg_resources:
        why = 'this Python has pkg_resources'
    elif name == 'pycocotools' and transformers is not None and transformers.major >= 5:
        why = f"mmpretrain's multimodal models fail under transformers {transformers}"
    elif not tags & supported:
        why = 'not for this Python'
    else:
        print(path)
        continue
    print(f'not installed: {path.name} ({why})', file=sys.stderr)
EOF
}

install() {
    local listed wheels
    listed=$(installable_wheels) || return 1
    if [ -z "$listed" ]; then
        echo "No wheels in $WHEELS: run 'bash tools/misc/gpu_check.sh --prepare' first and" \
            "name .device_wheels in the device tool's carry." >&2
        return 1
    fi
    mapfile -t wheels <<<"$listed"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}"
}

step() {  # step NAME SECONDS COMMAND...: run, time and report one step (0 s: no limit)
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo
    if [ "$limit" -gt 0 ]; then
        echo "=== $name (limit ${limit}s) ==="
        timeout --kill-after=10 "$limit" "$@"
    else
        echo "=== $name ==="
        "$@"  # a shell function
    fi
    status=$?
    echo "=== $name: exit status $status after $((SECONDS - start))s ==="
    [ "$status" -eq 0 ] || FAILED+=("$name (exit status $status)")
}

run() {
    local device=cuda tests=1 bench=1 compile=1 amps=(fp16 bf16) bench_args=() arg
    for arg in "$@"; do
        case $arg in
            --cpu) device=cpu amps=(bf16)
                bench_args=(--batch 1 --dense-shapes 1x224x256 --warmup 0 --iters 1) ;;
            --skip-tests) tests=0 ;;
            --skip-bench) bench=0 ;;
            --skip-compile) compile=0 ;;
            *) echo "gpu_check.sh: unknown option $arg" >&2; usage; return 2 ;;
        esac
    done
    [ -n "$BENCH_TIMEOUT" ] || BENCH_TIMEOUT=$([ $device = cuda ] && echo 120 || echo 600)
    [ -n "$COMPILE_TIMEOUT" ] || COMPILE_TIMEOUT=$([ $device = cuda ] && echo 180 || echo 600)
    FAILED=()
    cd "$ROOT" || return 1
    mkdir -p "$OUTDIR"
    echo "gpu_check.sh: $(date -Iseconds), commit $(git rev-parse --short HEAD 2>/dev/null)"
    command -v nvidia-smi >/dev/null && nvidia-smi -L

    step 'install wheels' 0 install
    export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONUNBUFFERED=1
    step versions 45 "$PYTHON" -c "
import sys, numpy, torch, mmengine, mmcv, mmpretrain, sec_mm
print('Python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA',
      torch.version.cuda, torch.cuda.is_available(), '| numpy', numpy.__version__)
print('mmengine', mmengine.__version__, '| mmcv', mmcv.__version__, '| mmpretrain',
      mmpretrain.__version__, '| sec_mm', sec_mm.__version__, 'from', sec_mm.__file__)"

    if [ $tests = 1 ]; then
        # mmcv-lite has no compiled ops: the toy detector/segmentor iterations need them.
        step 'pytest tests/test_cuda' "$TEST_TIMEOUT" "$PYTHON" -m pytest tests/test_cuda -v \
            -m 'not mmcv_ops' -p no:cacheprovider --junitxml="$OUTDIR/test_cuda.xml"
    fi

    # The benchmark updates its sections of a copy of benchmarks/results.md in $OUTDIR.
    [ -f "$OUTDIR/results.md" ] || cp benchmarks/results.md "$OUTDIR/results.md"
    if [ $bench = 1 ]; then
        for amp in "${amps[@]}"; do
            step "benchmark $device $amp" "$BENCH_TIMEOUT" "$PYTHON" \
                tools/analysis_tools/benchmark.py --device "$device" --amp "$amp" \
                "${bench_args[@]}" --out "$OUTDIR/results.md"
        done
    fi
    if [ $compile = 1 ]; then
        # A section of its own (tables: compile): eager and inductor in turns.
        step "benchmark $device bf16 compiled" "$COMPILE_TIMEOUT" "$PYTHON" \
            tools/analysis_tools/benchmark.py --device "$device" --amp bf16 --tables compile \
            --compile SECViT-T "${bench_args[@]}" --out "$OUTDIR/results.md"
    fi

    echo
    if [ ${#FAILED[@]} -eq 0 ]; then
        echo "gpu_check.sh: all steps passed; results in $OUTDIR"
    else
        printf 'gpu_check.sh: FAILED: %s\n' "${FAILED[@]}"
        return 1
    fi
}

usage() {
    echo "usage: bash tools/misc/gpu_check.sh --prepare [WHEEL_DIR]" >&2
    echo "       bash tools/misc/gpu_check.sh [--cpu] [--skip-tests] [--skip-bench] [--skip-compile]" >&2
}

if [ "${1:-}" = --prepare ]; then
    shift
    prepare "$@"
else
    mkdir -p "$OUTDIR"
    run "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
fi
