#!/usr/bin/env bash
# Train on a Slurm cluster: one task per GPU, each running tools/train.py --launcher slurm.
#
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [GRES=gpu:8] [SRUN_ARGS=...] \
#       bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
#
# GPUS is the total number of tasks and GPUS_PER_NODE the tasks per node; GRES defaults to
# gpu:$GPUS_PER_NODE (set GRES= on CPU-only partitions: the tasks then use gloo).
#
# Preemption and time limits: Slurm sends SIGTERM to every task (then SIGKILL after the
# cluster's KillWait, 30 s by default). SRUN_ARGS="--signal=USR1@180" adds a SIGUSR1 three
# minutes before the time limit. On either signal every task finishes its iteration, a
# checkpoint of it is saved, and every task exits with code 75 (so does srun). Pass --resume:
# it continues from the newest complete checkpoint of WORK_DIR, and starts fresh when there is
# none, so the same command serves the first start and every restart. To restart by itself,
# submit the same srun line in an sbatch script with "#SBATCH --requeue" (preempted jobs are
# requeued) and "#SBATCH --signal=USR1@180"; after a time limit, requeue it from the script:
# srun ... --resume; [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"
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
