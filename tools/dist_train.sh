#!/usr/bin/env bash
# Train with several processes through torchrun (the same options as tools/train.py).
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
#
# GPUS processes per machine (on a machine without CUDA: GPUS CPU processes, gloo backend).
# Several machines: run it on each with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR (node 0's
# address) and PORT set alike. PYTHON picks the interpreter (default: python).
#
# Killing this script (any signal, SIGKILL included) ends every process of the job. A process
# lost on any node ends the job within env_cfg.peer_timeout seconds (default 120; e.g.
# --cfg-options env_cfg.peer_timeout=300), with a message naming the lost rank and node.
#
# Preemption: SIGTERM to this script (what Slurm and Kubernetes send; kill PID) is passed on by
# torchrun to every training process, which finishes its iteration, saves a checkpoint of it
# and exits with code 75 (torchrun itself then exits 1); --resume continues from it. torchrun
# sends SIGKILL 30 s after the SIGTERM (TORCH_ELASTIC_SHUTDOWN_TIMEOUT or torchrun's
# --shutdown-timeout where the torch version has them): an iteration and a save must fit.
# SIGUSR1 works the same where torchrun has --signals-to-handle (set here through its
# environment variable PET_SIGNALS_TO_HANDLE); older torchrun versions end at once on it, and
# the workers with them.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py options]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
TOOLS=$(dirname "$0")

# exec keeps this shell's pid for torchrun: the workers check that their parent is still it.
SEC_MM_LAUNCHER_PID=$$ \
PET_SIGNALS_TO_HANDLE=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1} \
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
