"""Turn a full mmdet / mmseg / mmpretrain config into a seconds-long CPU run on the toy sets.

:func:`shrink_config` keeps everything that defines the model and the recipe (backbone, neck,
heads, losses, pipelines, optimizer, schedulers, hooks) and changes only what makes the run
big: the datasets (the toy COCO / ADE / ImageNet sets of ``tools/misc/make_toy_datasets.py``),
the class count, the image sizes (every ``scale``/``scales``/``crop_size`` of the pipelines and
the segmentor's crop size, scaled by one factor), batch sizes, workers, the run length and the
number of region proposals. Pretrained backbone weights are dropped (random init), SyncBN
becomes BN (one process has nothing to synchronise), a config's float16 mixed precision
(``AmpOptimWrapper``, which needs an accelerator) runs as bfloat16 ``CPUAmpOptimWrapper`` where
there is none, as ``tools/train.py --amp`` does on CPU, and no checkpoint is written.

Usage::

    cfg = shrink_config(Config.fromfile(path), toy_data_root, tmp_path)
    runner = build_runner(cfg)  # or Runner.from_cfg(cfg), a few seconds slower
    runner.train()  # one training iteration, then one validation pass
"""
import copy
import inspect
from pathlib import Path
from typing import Any, Callable, Union

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.runner import Runner
from tool_helpers import load_tool

REPO_ROOT = Path(__file__).resolve().parents[2]

# The short image side each codebase's stock pipelines are written for.
REFERENCE_SIDE = {'mmdet': 800, 'mmseg': 512, 'mmpretrain': 224}
TOY_FOLDER = {'mmdet': 'toy_coco', 'mmseg': 'toy_ade', 'mmpretrain': 'toy_imagenet'}
_SIZE_KEYS = ('scale', 'scales', 'crop_size')


def toy_classes():
    """``(CLASSES, SEG_CLASSES)`` of the toy generator in ``tools/misc``."""
    module = load_tool('misc/make_toy_datasets.py')
    return tuple(module.CLASSES), tuple(module.SEG_CLASSES)


def _walk(node: Any, visit: Callable[[dict], None]) -> None:
    """Call ``visit`` on every dict nested in ``node`` (dicts and lists), parents first."""
    if isinstance(node, dict):
        visit(node)
        for value in list(node.values()):
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return max(16, int(round(value * factor)))
    if isinstance(value, (list, tuple)):
        return type(value)(_scaled(v, factor) for v in value)
    return value


def _datasets(dataset: dict):
    """The leaf dataset dicts inside dataset wrappers (Repeat/ClassBalanced/Concat...)."""
    if 'dataset' in dataset:
        yield from _datasets(dataset['dataset'])
    elif 'datasets' in dataset:
        for item in dataset['datasets']:
            yield from _datasets(item)
    else:
        yield dataset


def _point_at_toy_data(dataset: dict, scope: str, root: Path, split: str,
                       num_images: int) -> None:
    classes, seg_classes = toy_classes()
    if scope == 'mmdet':
        dataset.update(
            data_root=str(root), ann_file=f'annotations/instances_{split}2017.json',
            data_prefix=dict(img=f'{split}2017/'), metainfo=dict(classes=classes))
    elif scope == 'mmseg':
        # ADE20KDataset only accepts subsets of ADE's 150 classes; the toy set has its own
        # four (background is a real class here), so the plain BaseSegDataset reads it.
        folder = {'train': 'training', 'val': 'validation'}[split]
        palette = [[0, 0, 0], [220, 20, 60], [0, 128, 255], [255, 200, 0]][:len(seg_classes)]
        dataset.update(
            type='BaseSegDataset', data_root=str(root), img_suffix='.jpg',
            seg_map_suffix='.png', reduce_zero_label=False,
            data_prefix=dict(img_path=f'images/{folder}', seg_map_path=f'annotations/{folder}'),
            metainfo=dict(classes=seg_classes, palette=palette))
    else:
        # mmpretrain's ImageNet needs its 1000 classes; CustomDataset reads class folders.
        for key in ('split', 'classes'):
            dataset.pop(key, None)
        dataset.update(type='CustomDataset', data_root=str(root), data_prefix=split,
                       ann_file='', with_label=True)
    dataset['indices'] = num_images


def _shrink_loader(loader: dict, scope: str, root: Path, split: str, batch_size: int,
                   num_images: int) -> None:
    loader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    for dataset in _datasets(loader['dataset']):
        _point_at_toy_data(dataset, scope, root, split, num_images)

        def no_zero_reduction(transform: dict) -> None:
            if 'reduce_zero_label' in transform and scope == 'mmseg':
                transform['reduce_zero_label'] = False

        _walk(dataset.get('pipeline', []), no_zero_reduction)


def _shrink_sizes(cfg: Config, factor: float) -> None:

    def scale_sizes(transform: dict) -> None:
        for key in _SIZE_KEYS:
            if key in transform:
                transform[key] = _scaled(transform[key], factor)

    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name):
            for dataset in _datasets(cfg[name]['dataset']):
                _walk(dataset.get('pipeline', []), scale_sizes)
    for preprocessor in (cfg.model.get('data_preprocessor'), cfg.get('data_preprocessor')):
        if preprocessor and preprocessor.get('size'):
            preprocessor['size'] = _scaled(preprocessor['size'], factor)


def _fewer_proposals(model: dict, max_proposals: int) -> None:
    """Fewer RPN proposals and RoI samples: cheap heads, same code paths."""

    def cap(node: dict) -> None:
        for key, limit in (('max_per_img', max_proposals), ('nms_pre', 2 * max_proposals)):
            if isinstance(node.get(key), int) and node[key] > limit:
                node[key] = limit
        sampler = node.get('sampler')
        if isinstance(sampler, dict) and isinstance(sampler.get('num'), int):
            sampler['num'] = min(sampler['num'], max_proposals)

    for key in ('train_cfg', 'test_cfg'):
        _walk(model.get(key) or {}, cap)


def _drop_pretrained(model: dict) -> None:

    def drop(node: dict) -> None:
        if node.get('pretrained'):
            node['pretrained'] = None
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        elif isinstance(init_cfg, list):
            node['init_cfg'] = [c for c in init_cfg if c.get('type') != 'Pretrained'] or None

    _walk(model, drop)


def _set_everywhere(node: Any, key: str, value: Any) -> None:

    def set_key(item: dict) -> None:
        if key in item:
            item[key] = value

    _walk(node, set_key)


def _replace_type(node: Any, old: str, new: str) -> None:

    def replace(item: dict) -> None:
        if item.get('type') == old:
            item['type'] = new

    _walk(node, replace)


def _amp_on_this_machine(cfg: Config) -> None:
    """mmengine's AmpOptimWrapper only runs on an accelerator; on CPU the mixed precision of
    the config runs in bfloat16 (which needs no loss scaling) through CPUAmpOptimWrapper."""
    wrapper = cfg.get('optim_wrapper')
    if wrapper and wrapper.get('type') == 'AmpOptimWrapper' and get_device() == 'cpu':
        wrapper.type = 'CPUAmpOptimWrapper'
        wrapper.pop('loss_scale', None)
        wrapper.dtype = 'bfloat16'


def _shorten_run(cfg: Config, iters: int) -> None:
    loop = cfg.train_cfg
    if loop.get('type', 'EpochBasedTrainLoop') == 'IterBasedTrainLoop' or 'max_iters' in loop:
        loop.update(max_iters=iters, val_interval=iters)
        length, by_epoch = iters, False
    else:
        # One epoch over `iters` batches of the shrunk training set.
        loop.update(max_epochs=1, val_interval=1)
        length, by_epoch = 1, True
    # A scheduler without an explicit end runs until the end of training; one that would
    # begin after the shortened run cannot be built (begin >= end), and never acts anyway.
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    cfg.param_scheduler = [
        s for s in schedulers
        if 'end' in s or s.get('by_epoch', True) != by_epoch or s.get('begin', 0) < length
    ]


def shrink_config(cfg: Config,
                  toy_data_root: Union[str, Path],
                  work_dir: Union[str, Path],
                  image_size: int = 96,
                  batch_size: int = 2,
                  iters: int = 1,
                  num_val_images: int = 2,
                  max_proposals: int = 16) -> Config:
    """A copy of ``cfg`` that trains ``iters`` iterations and validates on the toy sets.

    Args:
        cfg (Config): A full mmdet, mmseg or mmpretrain config (``default_scope`` decides).
        toy_data_root (str | Path): Folder holding ``toy_coco``, ``toy_ade``,
            ``toy_imagenet`` as written by ``tools/misc/make_toy_datasets.py``.
        work_dir (str | Path): The runner's work dir (logs).
        image_size (int): The short side the stock pipelines' reference size (800 for
            mmdet, 512 for mmseg, 224 for mmpretrain) is scaled to; every size of the
            pipelines scales by the same factor. Defaults to 96.
        batch_size (int): Training batch size; validation uses 1. Defaults to 2.
        iters (int): Training iterations. Defaults to 1.
        num_val_images (int): Validation images. Defaults to 2.
        max_proposals (int): Cap of RPN proposals, RoI samples and detections per image.
            Defaults to 16.

    Returns:
        Config: The shrunk copy; ``cfg`` is unchanged.
    """
    cfg = copy.deepcopy(cfg)
    scope = cfg.get('default_scope')
    if scope not in TOY_FOLDER:
        raise ValueError(f'shrink_config handles mmdet, mmseg and mmpretrain configs; this one '
                         f'has default_scope={scope!r}.')
    root = Path(toy_data_root) / TOY_FOLDER[scope]
    if not root.is_dir():
        raise FileNotFoundError(f'{root} is missing: make it with '
                                f'`python tools/misc/make_toy_datasets.py all --out-dir '
                                f'{toy_data_root}`.')
    classes, seg_classes = toy_classes()
    num_classes = len(seg_classes) if scope == 'mmseg' else len(classes)

    cfg.work_dir = str(work_dir)
    cfg.load_from = None
    cfg.resume = False
    cfg.randomness = dict(seed=0)
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

    # Model: random init, plain BN, the toy classes, few proposals.
    _drop_pretrained(cfg.model)
    _replace_type(cfg.model, 'SyncBN', 'BN')
    _set_everywhere(cfg.model, 'num_classes', num_classes)
    if cfg.get('data_preprocessor'):
        _set_everywhere(cfg.data_preprocessor, 'num_classes', num_classes)
    _fewer_proposals(cfg.model, max_proposals)
    _amp_on_this_machine(cfg)

    # Data.
    num_train_images = batch_size * iters
    _shrink_loader(cfg.train_dataloader, scope, root, 'train', batch_size, num_train_images)
    for name in ('val_dataloader', 'test_dataloader'):
        if cfg.get(name):
            _shrink_loader(cfg[name], scope, root, 'val', 1, num_val_images)
    _shrink_sizes(cfg, image_size / REFERENCE_SIDE[scope])

    def evaluator_on_toy(metric: dict) -> None:
        if metric.get('type') == 'CocoMetric':
            metric['ann_file'] = str(root / 'annotations' / 'instances_val2017.json')
        if metric.get('type') == 'Accuracy' and 'topk' in metric:
            metric['topk'] = tuple(k for k in metric['topk'] if k <= num_classes) or (1, )

    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name):
            _walk(cfg[name], evaluator_on_toy)

    # A short run, logged every iteration, that writes no checkpoint.
    _shorten_run(cfg, iters)
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The real :class:`Runner` with the arguments ``Runner.from_cfg(cfg)`` passes, minus the
    config itself.

    Given a config, the Runner logs, dumps and stores it in checkpoints as yapf-formatted text
    (``Config.pretty_text``), seconds per run, and nothing a short test
    looks at. Everything else is built exactly as ``from_cfg`` builds it.
    """
    cfg = copy.deepcopy(cfg)
    names = [name for name in inspect.signature(Runner.__init__).parameters
             if name not in ('self', 'cfg')]
    return Runner(**{name: cfg[name] for name in names if name in cfg})
