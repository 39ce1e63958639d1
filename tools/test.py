"""Test (and evaluate) a checkpoint with an mmdet, mmseg or mmpretrain config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR] [--show]
                         [--show-dir DIR] [--tta] [--cfg-options k=v ...]
                         [--launcher {none,pytorch,slurm}]

Several processes: ``bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [options]``.
"""
import argparse
import os

# The launchers of sec_mm.engine.dist (kept here so that --help imports nothing heavy).
LAUNCHERS = ('none', 'pytorch', 'slurm')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a model (mmdet, mmseg or mmpretrain)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument(
        '--out', help='mmdet/mmpretrain: pickle file to dump the predictions to; mmseg: '
        'folder to save the predicted label maps in')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir',
                        help='save images with predictions drawn on them here (mmdet: under '
                        'work_dir/<timestamp>/)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each shown image stays (with --show)')
    parser.add_argument(
        '--cfg-options', nargs='+', metavar='KEY=VALUE',
        help='override config settings, e.g. test_dataloader.batch_size=1; no white space '
        'around "="')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (the config\'s tta_model/tta_pipeline, '
                        'else flip)')
    parser.add_argument(
        '--force-cpu', action='store_true',
        help='run on CPU even where NVIDIA GPUs are visible but torch cannot use them')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    # Imported after the arguments are parsed: torch and the codebases take seconds.
    from sec_mm.checkpoint import require_fitting_checkpoints
    from sec_mm.engine.data_audit import audit_datasets
    from sec_mm.engine.launch import (add_dump_metric, apply_test_options, build_runner,
                                     load_config)

    cfg = load_config(args.config, args.cfg_options)
    apply_test_options(cfg, args.config, args.checkpoint, launcher=args.launcher,
                       work_dir=args.work_dir, show=args.show, show_dir=args.show_dir,
                       wait_time=args.wait_time, out=args.out, tta=args.tta,
                       force_cpu=args.force_cpu)
    runner = build_runner(cfg)
    audit_datasets(cfg, ('test', ))  # data faults named before the checkpoint is loaded
    # A checkpoint of another model stops the test instead of scoring partly random weights.
    require_fitting_checkpoints(runner.model)
    add_dump_metric(runner, cfg, args.out)
    runner.test()


if __name__ == '__main__':
    main()
