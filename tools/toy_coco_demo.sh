#!/usr/bin/env bash
# The OpenMMLab loop in miniature, self-contained and small enough for a CPU: from an
# environment to a COCO mAP table of a SECViT-T Mask R-CNN trained from scratch on toy shapes.
#
#   bash tools/toy_coco_demo.sh
#
# 1. sets up (or reuses) the environment with tools/setup_env.sh;
# 2. writes the toy COCO shapes set to data/toy_coco unless it is there;
# 3. trains the SECViT-T Mask R-CNN toy config from scratch through tools/dist_train.sh with
#    2 processes (gloo on CPU, nccl on GPUs);
# 4. evaluates the last checkpoint through tools/dist_test.sh and prints the COCO bbox and
#    segm mAP tables.
#
# Environment variables (defaults in brackets):
#   TRAIN_ITERS [80]      training iterations (2 processes x 2 images each)
#   GPUS [2]              processes for training and testing
#   WORK_DIR [work_dirs/toy_coco_demo]
#   DATA_DIR [data]       where toy_coco lives or is written
#   SEC_MM_PYTHON         use this interpreter instead of running tools/setup_env.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ITERS=${TRAIN_ITERS:-80}
GPUS=${GPUS:-2}
WORK_DIR=${WORK_DIR:-work_dirs/toy_coco_demo}
DATA_DIR=${DATA_DIR:-data}
CONFIG=configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py
WARMUP=$(( ITERS < 200 ? ITERS / 4 : 50 ))

start=$(date +%s)
stage() { printf '\n[toy_coco_demo %s +%ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - start ))" "$*"; }

stage "1/4 environment"
PYTHON=${SEC_MM_PYTHON:-$(bash tools/setup_env.sh)}
export PYTHON  # the interpreter tools/dist_train.sh and dist_test.sh run
echo "python: $PYTHON"

stage "2/4 toy COCO shapes set in $DATA_DIR/toy_coco"
"$PYTHON" tools/misc/make_toy_datasets.py coco --out-dir "$DATA_DIR"

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stage "3/4 training SECViT-T Mask R-CNN from scratch: $ITERS iterations, $GPUS processes"
# The schedule is scaled to the iteration count: linear warm-up, then cosine decay to the end.
PORT=$(free_port) bash tools/dist_train.sh "$CONFIG" "$GPUS" --work-dir "$WORK_DIR" \
  --cfg-options \
    train_dataloader.dataset.data_root="$DATA_DIR/toy_coco/" \
    train_cfg.max_iters="$ITERS" train_cfg.val_interval="$ITERS" \
    val_cfg=None val_dataloader=None val_evaluator=None \
    param_scheduler.0.end="$WARMUP" \
    param_scheduler.1.begin="$WARMUP" param_scheduler.1.end="$ITERS" \
    param_scheduler.1.T_max="$(( ITERS - WARMUP ))" \
    default_hooks.checkpoint.interval="$ITERS"

checkpoint="$WORK_DIR/iter_$ITERS.pth"
[ -f "$checkpoint" ] || { echo "training ended without $checkpoint" >&2; exit 1; }

stage "4/4 COCO evaluation of $checkpoint on the val split, $GPUS processes"
log="$WORK_DIR/test.log"
PORT=$(free_port) bash tools/dist_test.sh "$CONFIG" "$checkpoint" "$GPUS" \
  --work-dir "$WORK_DIR/test" \
  --cfg-options \
    test_dataloader.dataset.data_root="$DATA_DIR/toy_coco/" \
    test_evaluator.ann_file="$DATA_DIR/toy_coco/annotations/instances_val2017.json" \
    test_evaluator.classwise=True 2>&1 | tee "$log"

stage "done in $(( $(date +%s) - start )) s; COCO mAP on toy val (IoU 0.50:0.95 unless noted)"
"$PYTHON" - "$log" <<'EOF'
import re
import sys

text = open(sys.argv[1]).read()
found = dict(re.findall(r'coco/(\w+_mAP\w*): (-?\d+\.\d+)', text))
if not found:
    sys.exit('No COCO metrics in the test output (see above).')
columns = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
print('| task | ' + ' | '.join(columns) + ' |')
print('|---' * (len(columns) + 1) + '|')
for task in ('bbox', 'segm'):
    print(f'| {task} | ' + ' | '.join(found.get(f'{task}_{c}', 'n/a') for c in columns) + ' |')
EOF
