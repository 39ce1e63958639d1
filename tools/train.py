"""Train a model from an mmdet, mmseg or mmpretrain config (picked by its default_scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--start-fresh]
                          [--amp [{fp16,bf16}]] [--cfg-options k=v ...]
                          [--launcher {none,pytorch,slurm}]

Several processes: ``bash tools/dist_train.sh CONFIG GPUS [options]`` (torchrun). The
distributed backend is nccl with CUDA and gloo without; on CPU the same command works.

One run per work dir (a second one stops at once, naming the first); a run that would start
from scratch in a work dir holding checkpoints stops unless --resume or --start-fresh says what
to do. Checkpoints are written atomically and loaded weights-only.
"""
import argparse
import os

# The launchers of sec_mm.engine.dist (kept here so that --help imports nothing heavy).
LAUNCHERS = ('none', 'pytorch', 'slurm')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmdet, mmseg or mmpretrain)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the newest complete '
        'checkpoint in the work dir (a fresh start where it holds none)')
    parser.add_argument(
        '--start-fresh', action='store_true',
        help='train from scratch even where the work dir holds checkpoints (they are kept); '
        'with --resume: only where it finds no complete checkpoint')
    parser.add_argument(
        '--amp', nargs='?', const='auto', choices=('auto', 'fp16', 'bf16'),
        help='automatic mixed precision: fp16 (the default on GPUs, with dynamic loss '
        'scaling) or bf16 (the default on CPU)')
    parser.add_argument(
        '--force-cpu', action='store_true',
        help='run on CPU even where NVIDIA GPUs are visible but torch cannot use them')
    parser.add_argument(
        '--cfg-options', nargs='+', metavar='KEY=VALUE',
        help='override config settings, e.g. train_cfg.max_iters=100 or key="[a,b]" for '
        'lists; no white space around "="')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    # Imported after the arguments are parsed: torch and the codebases take seconds.
    from sec_mm.checkpoint import require_fitting_checkpoints
    from sec_mm.engine.data_audit import audit_datasets
    from sec_mm.engine.launch import apply_train_options, build_runner, load_config

    cfg = load_config(args.config, args.cfg_options)
    apply_train_options(cfg, args.config, launcher=args.launcher, work_dir=args.work_dir,
                        amp=args.amp, resume=args.resume, force_cpu=args.force_cpu,
                        start_fresh=args.start_fresh)
    runner = build_runner(cfg, lock_work_dir=True)
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
