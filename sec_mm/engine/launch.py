"""From the options of ``tools/train.py`` / ``tools/test.py`` to an mmengine Runner.

The same two tools drive mmdet, mmseg and mmpretrain configs; the codebase comes from the
config's ``default_scope``. Options mean what they mean in that codebase's own tools; where
the three differ (``--out``, ``--show-dir``, ``--tta``), the codebase's meaning is kept.
"""
import ast
import copy
import importlib
import logging
import os
import os.path as osp
from typing import Optional, Sequence, Union

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import Runner

from sec_mm.checkpoint import checkpoint_problem
from sec_mm.utils import codebase_of

from .dist import (accelerator_available, adapt_cfg_to_device, check_gpus_usable,
                   init_distributed)
from .lifetime import bind_to_launcher
from .peer_watchdog import DEFAULT_PEER_TIMEOUT, start_peer_watchdog
from .resume import (DEFAULT_FILENAME_TMPLS, checkpoint_dir, find_resumable_checkpoint,
                     list_checkpoints)
from .work_dir_lock import WorkDirLock

__all__ = ['ExistingCheckpointsError', 'parse_cfg_options', 'load_config', 'apply_train_options',
           'apply_test_options', 'build_runner', 'add_dump_metric', 'RUN_HOOKS',
           'add_custom_hooks']


class ExistingCheckpointsError(RuntimeError):
    """A run would start from scratch in a work dir that holds checkpoints."""



def parse_cfg_options(pairs: Optional[Sequence[str]]) -> dict:
    """``--cfg-options`` as ``KEY=VALUE`` strings into a dict, values parsed as mmengine's
    ``DictAction`` parses them (``a=1``, ``b=[1,2]``, ``c=(x,y)``, ``d=True``).

    Raises:
        ValueError: An item without ``=``, or with an empty key, named with an example.
    """
    options = {}
    for pair in pairs or ():
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise ValueError(
                f'--cfg-options {pair!r}: every option is KEY=VALUE without spaces around '
                "'=', e.g. train_cfg.max_iters=100 or model.backbone.out_indices=[1,2,3].")
        options[key] = DictAction._parse_iterable(value)
    return options


def load_config(path: str, cfg_options: Union[dict, Sequence[str], None] = None) -> Config:
    """Read a config file and merge ``--cfg-options`` (a dict, or ``KEY=VALUE`` strings)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Config file {path!r} does not exist.')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as error:
        if error.filename not in (None, '<unknown>'):
            raise
        # mmengine parses the text without its file name; find the file that has the error.
        with open(path, encoding='utf-8') as f:
            ast.parse(f.read(), filename=path)  # raises, naming the file and line
        raise SyntaxError(f'{error.msg} (line {error.lineno}) in one of the _base_ files of '
                          f'config {path}') from error
    if cfg_options:
        if not isinstance(cfg_options, dict):
            cfg_options = parse_cfg_options(cfg_options)
        cfg.merge_from_dict(cfg_options)
    codebase_of(cfg)  # fail early on configs the tools cannot drive
    return cfg


def _set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    # Priority as in the stock tools: CLI > config > ./work_dirs/<config name>.
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


#: ``--amp`` values and the autocast dtype each means.
AMP_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16'}


def _apply_amp(cfg: Config, amp: str) -> None:
    """Turn ``cfg.optim_wrapper`` into a mixed-precision wrapper (``--amp``)."""
    if amp != 'auto' and amp not in AMP_DTYPES:
        raise ValueError(f'--amp takes fp16 or bf16 (or nothing), got {amp!r}.')
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in ('AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        # The dense recipes train in fp16 already; an explicit --amp fp16|bf16 picks the type.
        if amp != 'auto':
            cfg.optim_wrapper.dtype = AMP_DTYPES[amp]
        print_log(f'AMP training is already enabled in the config '
                  f"({cfg.optim_wrapper.get('dtype', 'float16')}).", logger='current')
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper (it becomes '
                         f'AmpOptimWrapper); the config has {wrapper_type!r}.')
    if accelerator_available():
        # float16 by default, with dynamic loss scaling, as the stock tools' --amp.
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.dtype = AMP_DTYPES['fp16' if amp == 'auto' else amp]
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        # mmengine's AmpOptimWrapper needs an accelerator. On CPU bfloat16 is the default:
        # CPU float16 kernels are few and slow, and bfloat16 needs no loss scaling.
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        cfg.optim_wrapper.dtype = AMP_DTYPES['bf16' if amp == 'auto' else amp]


#: Hooks every run of tools/train.py gets unless its config lists them (configs for the stock
#: tools list them in ``custom_hooks``): see sec_mm/engine/hooks.
RUN_HOOKS = ('NonFiniteGuardHook', 'ExactResumeHook', 'PreemptionHook')


def add_custom_hooks(cfg: Config, hook_types) -> None:
    """Append ``dict(type=T)`` to ``cfg.custom_hooks`` for each type not there yet."""
    hooks = list(cfg.get('custom_hooks') or [])
    present = set()
    for hook in hooks:
        hook_type = hook.get('type') if isinstance(hook, dict) else type(hook)
        present.add(getattr(hook_type, '__name__', hook_type))
    cfg.custom_hooks = hooks + [dict(type=t) for t in hook_types if t not in present]


def _keep_the_checkpoint_seed(cfg: Config) -> None:
    # The train sampler and the data workers are seeded when the Runner builds the loop,
    # before it reads the checkpoint: with another seed (randomness.seed=None draws one) the
    # data after the checkpoint would not be the original run's.
    if not cfg.get('resume') or not cfg.get('load_from'):
        return
    try:
        meta = torch.load(cfg.load_from, map_location='cpu', weights_only=True,
                          mmap=True).get('meta') or {}
    except Exception:  # named by the resume itself
        return
    seed = meta.get('seed')
    randomness = cfg.setdefault('randomness', ConfigDict())
    if isinstance(seed, int) and randomness.get('seed') != seed:
        print_log(f'--resume: randomness.seed={seed}, the seed of the run being resumed (the '
                  f'config says {randomness.get("seed")}).', logger='current')
        randomness['seed'] = seed


def apply_train_options(cfg: Config, config_path: str, launcher: str = 'none',
                        work_dir: Optional[str] = None, amp: Union[bool, str, None] = None,
                        resume: Optional[str] = None, force_cpu: bool = False,
                        start_fresh: bool = False) -> Config:
    """Apply the training tool's options to ``cfg`` (in place; also returned).

    Args:
        cfg: The loaded config.
        config_path: Its file (names the default work dir).
        launcher: ``'none'``, ``'pytorch'`` or ``'slurm'``.
        work_dir: ``--work-dir``.
        amp: ``--amp``: ``'fp16'`` or ``'bf16'`` mixed precision, or ``'auto'`` / True for
            the device's default (float16 with dynamic loss scaling through
            ``AmpOptimWrapper`` on GPUs, bfloat16 through ``CPUAmpOptimWrapper`` on CPU).
            None or False trains in float32.
        resume: ``--resume``: ``'auto'`` resumes from the work dir's newest complete
            checkpoint (naming the newer ones that are not; none: a fresh start), a path
            resumes from that checkpoint, None starts fresh.
        force_cpu: ``--force-cpu``: run on CPU even where NVIDIA GPUs are visible but torch
            cannot use them (see :func:`~sec_mm.engine.dist.check_gpus_usable`).
        start_fresh: ``--start-fresh``: start from scratch even where the work dir holds
            checkpoints (otherwise refused). They are kept: no run deletes or overwrites a
            checkpoint it did not write.

    Raises:
        ExistingCheckpointsError: A run that would start from scratch (no ``resume``, or
            ``'auto'`` finding no complete checkpoint) in a work dir holding checkpoints.

    Checkpoints are written atomically (:class:`~sec_mm.engine.hooks.
    AtomicCheckpointHook` in place of mmengine's ``CheckpointHook``), and the hooks of
    :data:`RUN_HOOKS` are added unless the config has them: a non-finite loss or gradient norm
    stops the run, a stop signal saves a checkpoint and exits, checkpoints hold what an exact
    resume needs (a resumed run also keeps the checkpoint's seed).
    """
    check_gpus_usable(force_cpu)
    cfg.launcher = launcher
    _set_work_dir(cfg, config_path, work_dir)
    if amp:
        _apply_amp(cfg, 'auto' if amp is True else amp)
    _use_atomic_checkpoints(cfg)
    add_custom_hooks(cfg, RUN_HOOKS)
    if resume == 'auto':
        _resume_newest_complete(cfg)
    elif resume is not None:
        _check_checkpoint_file(resume, '--resume', 'use --resume without a path to resume '
                               'from the newest complete checkpoint of the work dir')
        cfg.resume = True
        cfg.load_from = resume
    if not cfg.get('resume') and not start_fresh:
        _refuse_existing_checkpoints(cfg, resume)
    _keep_the_checkpoint_seed(cfg)
    return adapt_cfg_to_device(cfg, launcher)


def _checkpoint_hook_files(cfg: Config):
    hook = cfg.default_hooks.get('checkpoint') or {}
    tmpls = [hook['filename_tmpl']] if hook.get('filename_tmpl') else DEFAULT_FILENAME_TMPLS
    return tmpls, hook.get('out_dir')


def _refuse_existing_checkpoints(cfg: Config, resume: Optional[str]) -> None:
    tmpls, out_dir = _checkpoint_hook_files(cfg)
    folder = checkpoint_dir(cfg.work_dir, out_dir)
    found = [osp.basename(path) for _, path in list_checkpoints(folder, tmpls)]
    if not found:
        return
    shown = ', '.join(found[:5]) + (f' and {len(found) - 5} more' if len(found) > 5 else '')
    why = ('--resume found no complete checkpoint there (see the warnings above)'
           if resume == 'auto' else 'this run would start from scratch')
    raise ExistingCheckpointsError(
        f'Work dir {cfg.work_dir} holds checkpoints ({shown} in {folder}), but {why}: its '
        'checkpoints would be overwritten or deleted by a run they do not belong to. '
        'Resume them with --resume (or --resume PATH), train into another --work-dir, or '
        'pass --start-fresh to train from scratch anyway (the existing files are kept).')


def _use_atomic_checkpoints(cfg: Config) -> None:
    # mmengine's CheckpointHook writes in place; ours (same arguments) writes atomically and
    # removes old checkpoints only after the new one is complete.
    hooks = cfg.setdefault('default_hooks', ConfigDict())
    if 'checkpoint' not in hooks:
        hooks['checkpoint'] = dict(type='CheckpointHook', interval=1)  # mmengine's default
    hook = hooks['checkpoint']
    if hook is not None and hook.get('type') in ('CheckpointHook', CheckpointHook):
        hook['type'] = 'AtomicCheckpointHook'


def _resume_newest_complete(cfg: Config) -> None:
    tmpls, out_dir = _checkpoint_hook_files(cfg)
    found, skipped = find_resumable_checkpoint(cfg.work_dir, tmpls, out_dir)
    for path, problem in skipped:
        print_log(f'--resume: checkpoint {path} is {problem}; passing over it.',
                  logger='current', level=logging.WARNING)
    if found is not None:
        if skipped:
            print_log(f'--resume: resuming from {found}, the newest complete checkpoint.',
                      logger='current', level=logging.WARNING)
        cfg.resume = True
        cfg.load_from = found
    else:
        # Nothing to resume from: a fresh start (with the config's own load_from, if any),
        # unless the work dir holds checkpoint files (refused by the caller).
        cfg.resume = False


def _check_checkpoint_file(path: str, option: str, hint: str) -> None:
    if not osp.isfile(path):
        raise FileNotFoundError(f'{option} {path}: no such checkpoint file ({hint}).')
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(f'{option} {path}: the checkpoint is {problem} ({hint}).')


def _enable_visualization(cfg: Config, codebase: str, show: bool, show_dir: Optional[str],
                          wait_time: float) -> None:
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        hook_type = {'mmdet': 'DetVisualizationHook', 'mmseg': 'SegVisualizationHook',
                     'mmpretrain': 'VisualizationHook'}[codebase]
        raise ValueError('--show/--show-dir need a visualization hook; add default_hooks='
                         f"dict(visualization=dict(type='{hook_type}')) to the config.")
    hook = hooks['visualization']
    if codebase == 'mmpretrain':
        hook.update(enable=True, show=show, wait_time=wait_time, out_dir=show_dir)
        return
    hook['draw'] = True
    if show:
        hook.update(show=True, wait_time=wait_time)
    if show_dir:
        if codebase == 'mmdet':
            hook['test_out_dir'] = show_dir  # under work_dir/<timestamp>/, as mmdet does
        else:
            cfg.visualizer['save_dir'] = show_dir


def _flip_tta(cfg: Config, codebase: str) -> None:
    if codebase == 'mmseg' and ('tta_model' not in cfg or 'tta_pipeline' not in cfg):
        raise ValueError('--tta with an mmseg config needs `tta_model` and `tta_pipeline` in '
                         "it (the stock 'mmseg::_base_/default_runtime.py' and dataset bases "
                         'define them).')
    if 'tta_model' not in cfg:
        cfg.tta_model = (dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
            if codebase == 'mmdet' else dict(type='AverageClsScoreTTA'))
    if 'tta_pipeline' not in cfg:
        dataset = cfg.test_dataloader.dataset
        while 'dataset' in dataset:  # wrappers such as ConcatDataset/RepeatDataset
            dataset = dataset['dataset']
        pipeline = copy.deepcopy(dataset.pipeline)
        # Original and flipped image; the predictions are merged by the TTA model.
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [pipeline[-1]]])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def apply_test_options(cfg: Config, config_path: str, checkpoint: str, launcher: str = 'none',
                       work_dir: Optional[str] = None, show: bool = False,
                       show_dir: Optional[str] = None, wait_time: float = 2.,
                       out: Optional[str] = None, tta: bool = False,
                       force_cpu: bool = False) -> Config:
    """Apply the test tool's options to ``cfg`` (in place; also returned).

    ``out`` is mmseg's output folder for predicted label maps; for mmdet and mmpretrain it is
    the pickle file predictions are dumped to (see :func:`add_dump_metric`). ``force_cpu`` as
    in :func:`apply_train_options`.
    """
    check_gpus_usable(force_cpu)
    _check_checkpoint_file(checkpoint, 'CHECKPOINT', 'give a complete checkpoint file')
    add_custom_hooks(cfg, ('NonFiniteGuardHook', ))  # refuses non-finite weights
    codebase = codebase_of(cfg)
    cfg.launcher = launcher
    _set_work_dir(cfg, config_path, work_dir)
    cfg.load_from = checkpoint
    if show or show_dir:
        _enable_visualization(cfg, codebase, show, show_dir, wait_time)
    if tta:
        _flip_tta(cfg, codebase)
    if out is not None:
        if codebase == 'mmseg':
            cfg.test_evaluator['output_dir'] = out
            cfg.test_evaluator['keep_results'] = True
        elif not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {out!r}.')
    return adapt_cfg_to_device(cfg, launcher)


_held_locks = []  # this process's work-dir lock, held until it exits


def _lock_work_dir(work_dir: str) -> None:
    """Take the work dir's lock on the run's first process; the others wait for it."""
    rank = int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', 0)))
    if rank == 0:
        _held_locks.append(WorkDirLock.acquire(work_dir))
    # Where the process group exists already (CPU), nobody goes on before the lock is taken;
    # a rank 0 that failed to take it stops the others through the peer watchdog.
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def build_runner(cfg: Config, lock_work_dir: bool = False) -> Runner:
    """Start distributed (if launched so), then build the Runner the config asks for.

    Args:
        cfg: The config, with the tool's options applied.
        lock_work_dir: Take the work dir's lock (:class:`~sec_mm.engine.work_dir_lock.
            WorkDirLock`) before anything is written into it: one training run per work dir.
    """
    launcher = cfg.get('launcher', 'none')
    bind_to_launcher(launcher)  # no process of the run outlives the launcher
    # (Checkpoint loading is readied by `import sec_mm`, which importing this module does.)
    init_distributed(launcher)
    # A lost peer (on any node) ends the run within env_cfg.peer_timeout seconds. Started
    # before the Runner where the launcher's environment is complete, so that it also covers
    # the model's distributed set-up; otherwise once mmengine's init_dist has completed it.
    peer_timeout = cfg.get('env_cfg', {}).get('peer_timeout', DEFAULT_PEER_TIMEOUT)
    start_peer_watchdog(launcher, peer_timeout)
    if lock_work_dir:
        _lock_work_dir(cfg.work_dir)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        registry = importlib.import_module(f'{codebase_of(cfg)}.registry')
        runner = registry.RUNNERS.build(cfg)
    start_peer_watchdog(launcher, peer_timeout)
    return runner


def add_dump_metric(runner: Runner, cfg: Config, out: Optional[str]) -> None:
    """Dump the predictions to ``out`` (mmdet / mmpretrain ``--out``)."""
    codebase = codebase_of(cfg)
    if out is None or codebase == 'mmseg':
        return
    if codebase == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=out))
