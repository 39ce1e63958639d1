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
