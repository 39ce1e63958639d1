"""Train a model from an mmdet, mmseg or mmpretrain config (picked by its default_scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp [{fp16,bf16}]]
                          [--cfg-options k=v ...] [--launcher {none,pytorch,slurm}]

Several processes: ``bash tools/dist_train.sh CONFIG GPUS [options]`` (torchrun). The
distributed backend is nccl with CUDA and gloo without; on CPU the same command works.
"""
import argparse
import os

from mmengine.config import DictAction

from sec_mm.checkpoint import require_fitting_checkpoints
from sec_mm.engine.data_audit import audit_datasets
from sec_mm.engine.dist import LAUNCHERS
from sec_mm.engine.launch import apply_train_options, build_runner, load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model (mmdet, mmseg or mmpretrain)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest checkpoint in '
        'the work dir')
    parser.add_argument(
        '--amp', nargs='?', const='auto', choices=('auto', 'fp16', 'bf16'),
        help='automatic mixed precision: fp16 (the default on GPUs, with dynamic loss '
        'scaling) or bf16 (the default on CPU)')
    parser.add_argument(
        '--force-cpu', action='store_true',
        help='run on CPU even where NVIDIA GPUs are visible but torch cannot use them')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs (xxx=yyy), e.g. '
        'train_cfg.max_iters=100 or key="[a,b]" for lists; no white space')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    apply_train_options(cfg, args.config, launcher=args.launcher, work_dir=args.work_dir,
                        amp=args.amp, resume=args.resume, force_cpu=args.force_cpu)
    runner = build_runner(cfg)
    # Data faults (empty or missing files, nothing to train on, what will be dropped) are
    # named now rather than as a decoder or numpy error later.
    audit_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train', ))
    if cfg.get('resume'):
        # Resuming continues this very model. (load_from may fine-tune another head; the SEC
        # backbones check their own keys on every load.)
        require_fitting_checkpoints(runner.model)
    runner.train()


if __name__ == '__main__':
    main()
