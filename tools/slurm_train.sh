#!/usr/bin/env bash
# Train on a Slurm cluster: one task per GPU, each running tools/train.py --launcher slurm.
#
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [GRES=gpu:8] [SRUN_ARGS=...] \
#       bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
#
# GPUS is the total number of tasks and GPUS_PER_NODE the tasks per node; GRES defaults to
# gpu:$GPUS_PER_NODE (set GRES= on CPU-only partitions: the tasks then use gloo).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES-gpu:$GPUS_PER_NODE}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
TOOLS=$(dirname "$0")

GRES_ARGS=()
[ -n "$GRES" ] && GRES_ARGS=(--gres="$GRES")

set -x
# SRUN_ARGS is split on purpose: it holds several srun options.
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES_ARGS[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
