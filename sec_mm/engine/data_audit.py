"""A look at the datasets of a run before it starts, so that data faults are named.

The stock datasets handle bad data silently or late: mmdet's ``CocoDataset`` drops boxes under
a pixel wide or high and boxes outside their image, ``LoadAnnotations`` drops polygons of
fewer than three points, an image file of 0 bytes fails in ``cv2.imdecode`` (``!buf.empty()``)
without its name, and a dataset left with no samples fails in numpy (``need at least one array
to concatenate``). :func:`audit_datasets` reads the datasets the run will use once, on rank 0,
and

- reports once per dataset what the stock code will drop: how many of what, and in which
  images;
- stops with :class:`DataFaultError` naming the files that are empty or missing, and when a
  training dataset has nothing to train on.

Datasets are built with ``lazy_init=True``, so paths are resolved by the dataset classes
themselves; COCO-style annotation files (mmdet) are read as JSON, mmseg and mmpretrain datasets
list their samples with their own ``load_data_list``. Other dataset types are left alone.
"""
import importlib
import json
import logging
import os.path as osp
from collections import Counter
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from sec_mm.utils import codebase_of

__all__ = ['DataFaultError', 'audit_datasets', 'audit_dataset']

_SHOWN = 10  # file names listed per finding


class DataFaultError(ValueError):
    """A dataset a run cannot use: no samples, or files that are empty or missing."""


def _names(counts: Dict[str, int]) -> str:
    items = sorted(counts.items())
    shown = ', '.join(f'{osp.basename(k)} ({v})' if v > 1 else osp.basename(k)
                      for k, v in items[:_SHOWN])
    return shown + (f', ... ({len(items) - _SHOWN} more)' if len(items) > _SHOWN else '')


def _leaf_dataset_cfgs(cfg: dict) -> Iterator[dict]:
    """The datasets inside dataset wrappers (ConcatDataset, RepeatDataset, ...)."""
    if 'datasets' in cfg:
        for sub in cfg['datasets']:
            yield from _leaf_dataset_cfgs(sub)
    elif 'dataset' in cfg:
        yield from _leaf_dataset_cfgs(cfg['dataset'])
    else:
        yield cfg


def _check_files(what: str, paths: Sequence[str]) -> None:
    empty, missing = [], []
    for path in paths:
        if not osp.exists(path):
            missing.append(path)
        elif osp.isfile(path) and osp.getsize(path) == 0:
            empty.append(path)
    problems = []
    if empty:
        problems.append(f'{len(empty)} empty (0-byte) file(s): ' + ', '.join(empty[:_SHOWN]) +
                        (f', ... ({len(empty) - _SHOWN} more)' if len(empty) > _SHOWN else ''))
    if missing:
        problems.append(f'{len(missing)} missing file(s): ' + ', '.join(missing[:_SHOWN]) +
                        (f', ... ({len(missing) - _SHOWN} more)'
                         if len(missing) > _SHOWN else ''))
    if problems:
        raise DataFaultError(f'{what}: ' + '; '.join(problems) + '. Restore these files or '
                             'remove them from the dataset.')


# --------------------------------------------------------------------------------------------
# COCO-style annotation files (mmdet)
def _polygon_problems(segmentation) -> Tuple[int, bool]:
    """(polygons LoadAnnotations drops, whether none is left) for a polygon list."""
    if not isinstance(segmentation, list) or not segmentation:
        return 0, False  # RLE or no mask: not polygons
    bad = sum(1 for p in segmentation if len(p) % 2 or len(p) < 6)
    return bad, bad == len(segmentation)


def _audit_coco(dataset, what: str, training: bool) -> None:
    with open(dataset.ann_file) as f:
        coco = json.load(f)
    images = {im['id']: im for im in coco.get('images', [])}
    classes = set(dataset.metainfo.get('classes') or ())
    cat_ids = {c['id'] for c in coco.get('categories', []) if c.get('name') in classes}
    drops = {'box': Counter(), 'outside': Counter(), 'category': Counter(),
             'polygon': Counter(), 'maskless': Counter()}
    usable = Counter()
    for ann in coco.get('annotations', []):
        image = images.get(ann.get('image_id'))
        if image is None or ann.get('ignore', False):
            continue
        name = image['file_name']
        x, y, w, h = ann['bbox']
        inter_w = max(0, min(x + w, image['width']) - max(x, 0))
        inter_h = max(0, min(y + h, image['height']) - max(y, 0))
        if inter_w * inter_h == 0:
            drops['outside'][name] += 1
        elif ann.get('area', 0) <= 0 or w < 1 or h < 1:
            drops['box'][name] += 1
        elif ann['category_id'] not in cat_ids:
            drops['category'][name] += 1
        else:
            usable[name] += 1
            bad, maskless = _polygon_problems(ann.get('segmentation'))
            drops['polygon'][name] += bad
            drops['maskless'][name] += maskless
    drops = {k: +v for k, v in drops.items()}  # drop zero counts
    source = f'{what} ({type(dataset).__name__}, {dataset.ann_file})'
    if not images:
        raise DataFaultError(f'{source} lists no images. Check `ann_file`.')
    num_annotations = len(coco.get('annotations', []))
    if training and not usable:
        file_classes = sorted({c.get('name') for c in coco.get('categories', [])})
        raise DataFaultError(
            f'{source} has no annotation to train on: {len(images)} images, '
            f'{num_annotations} annotations, none a usable box of the classes '
            f'{sorted(classes)} (the file\'s categories: {file_classes}). Check `ann_file` '
            'and `metainfo.classes`.')
    findings = []
    descriptions = {  # what, then why
        'box': ('box(es) under 1 pixel wide or high, or of area 0', 'dropped by the dataset'),
        'outside': ('box(es) outside their image', 'dropped by the dataset'),
        'category': ('annotation(s) of categories not in `metainfo.classes`', 'dropped'),
        'polygon': ('polygon(s) with fewer than 3 points', 'dropped by LoadAnnotations'),
        'maskless': ('instance(s) left without a polygon', 'ignored in training'),
    }
    for key, (description, consequence) in descriptions.items():
        if drops.get(key):
            findings.append(f'{sum(drops[key].values())} {description} ({consequence}) in '
                            f'{_names(drops[key])}')
    if not num_annotations:
        findings.append('no annotations at all: evaluation has nothing to compare with '
                        '(unless the evaluator only formats results)')
    elif training and dataset.filter_cfg and dataset.filter_cfg.get('filter_empty_gt'):
        unused = [im['file_name'] for im in images.values() if im['file_name'] not in usable]
        if unused:
            findings.append(f'{len(unused)} of {len(images)} image(s) without a usable '
                            f'annotation (skipped by filter_empty_gt): '
                            f'{_names(Counter(unused))}')
    if findings:
        print_log(f'{source}: ' + '; '.join(findings) + '.', logger='current',
                  level=logging.WARNING)
    prefix = dataset.data_prefix.get('img', '')
    _check_files(f'{source}, images under {prefix}',
                 [osp.join(prefix, im['file_name']) for im in images.values()])


# --------------------------------------------------------------------------------------------
def _sample_files(data_list: List[dict]) -> List[str]:
    keys = ('img_path', 'seg_map_path')
    return [info[k] for info in data_list for k in keys if info.get(k)]


def audit_dataset(dataset: BaseDataset, what: str, training: bool) -> None:
    """Report what ``dataset`` will drop; raise :class:`DataFaultError` on what it cannot use.

    Args:
        dataset: A dataset built with ``lazy_init=True``.
        what: Named in the messages (e.g. ``'train dataset'``).
        training: Whether it is trained on (then it must have something to train on).
    """
    module = type(dataset).__module__.split('.')[0]
    ann_file = getattr(dataset, 'ann_file', '') or ''
    if module == 'mmdet' and ann_file.endswith('.json') and osp.isfile(ann_file):
        _audit_coco(dataset, what, training)
    elif module in ('mmseg', 'mmpretrain'):
        data_list = dataset.load_data_list()  # mmpretrain names an empty folder itself
        source = f'{what} ({type(dataset).__name__}, {_where(dataset)})'
        if not data_list:
            raise DataFaultError(f'{source} has no samples. Check `data_root`, '
                                 '`data_prefix`, `ann_file` and the file suffixes.')
        _check_files(source, _sample_files(data_list))


def _where(dataset) -> str:
    parts = [f'{k}={v}' for k, v in dataset.data_prefix.items() if v]
    if getattr(dataset, 'ann_file', None):
        parts.append(f'ann_file={dataset.ann_file}')
    suffix = getattr(dataset, 'img_suffix', None)
    return ', '.join(parts + ([f'img_suffix={suffix!r}'] if suffix else []))


def audit_datasets(cfg: Config, phases: Iterable[str]) -> None:
    """:func:`audit_dataset` for every dataset of ``cfg``'s ``{phase}_dataloader``s, on the
    main process (the others learn of an error through the peer watchdog).

    Args:
        cfg: The run's config (with ``default_scope``).
        phases: ``'train'``, ``'val'`` and/or ``'test'``.
    """
    if not is_main_process():
        return
    codebase = codebase_of(cfg)
    datasets = importlib.import_module(f'{codebase}.registry').DATASETS
    with DefaultScope.overwrite_default_scope(codebase):
        for phase in phases:
            loader = cfg.get(f'{phase}_dataloader')
            if not loader or not isinstance(loader.get('dataset'), dict):
                continue
            leaves = list(_leaf_dataset_cfgs(loader['dataset']))
            for i, leaf in enumerate(leaves):
                what = f'The {phase} dataset' + (f' {i}' if len(leaves) > 1 else '')
                dataset = _build_lazily(datasets, leaf)
                if dataset is not None:
                    audit_dataset(dataset, what, training=phase == 'train')


def _build_lazily(registry, cfg: dict) -> Optional[BaseDataset]:
    try:
        dataset = registry.build(dict(cfg, lazy_init=True))
    except TypeError:  # a dataset class without lazy_init: left to itself
        return None
    return dataset if isinstance(dataset, BaseDataset) else None
