"""The training recipes of docs/recipes.md hold in the merged configs.

Every table of the page names its configs (its ``Configs:`` line) and, in its last column,
what the merged configs hold: `key = value` for all of them, `name: key = value` for those
whose file name contains ``name``. These tests read the page itself, so a config change the
page does not show (or a page edit the configs do not follow) fails here. Beyond the page:
which parameters the weight-decay settings exempt (on the real models), the EMA momentum and
learning rate against the formulas of the authors' script, and one training iteration of a
3x detector through the crop branch of its multi-scale policy.
"""
import ast
import copy
import importlib
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, NamedTuple

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import DefaultScope
from mmengine.utils.dl_utils import is_norm
from shrink import build_runner, shrink_config

import sec_mm  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / 'docs' / 'recipes.md'
MISSING = object()
# `name: key = value` or `key = value`; key as in tools/misc/diff_configs.py: a.b[2].c
CHECK = re.compile(r'^(?:(?P<name>[\w.-]+): )?'
                   r'(?P<key>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*) = (?P<value>.+)$')


class Check(NamedTuple):
    setting: str  # the row
    name: str  # file-name filter ('' = every config of the table)
    key: str
    value: Any


class Table(NamedTuple):
    title: str
    configs: List[str]  # relative to the repository
    checks: List[Check]


def _cells(line: str) -> List[str]:
    return [cell.strip() for cell in line.strip().strip('|').split('|')]


def read_tables(path: Path = RECIPES) -> List[Table]:
    """The tables of the recipes page: their configs and the checks of their last column."""
    tables: List[Table] = []
    title = ''
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith('#'):
            title = line.lstrip('#').strip()
        elif line.startswith('Configs:'):
            configs = sorted({p.relative_to(REPO_ROOT).as_posix()
                              for pattern in re.findall(r'`([^`]+)`', line)
                              for p in REPO_ROOT.glob(pattern)})
            tables.append(Table(title, configs, []))
        elif line.startswith('|') and tables and tables[-1].title == title:
            cells = _cells(line)
            if cells[0] == 'setting' or not cells[0].strip('-'):
                continue  # header and separator rows
            for span in re.findall(r'`([^`]+)`', cells[-1]):
                if ' = ' not in span:
                    continue  # prose in code style (`--amp`, a class name)
                match = CHECK.match(span)
                assert match, f'{path.name}:{number}: cannot read the check `{span}`'
                tables[-1].checks.append(Check(cells[0], match['name'] or '', match['key'],
                                               ast.literal_eval(match['value'])))
    return tables


TABLES = read_tables()


@lru_cache(maxsize=None)
def _merged(path: str) -> Dict[str, Any]:
    return Config.fromfile(REPO_ROOT / path).to_dict()


def _lookup(node: Any, key: str) -> Any:
    for part in re.findall(r'[A-Za-z_]\w*|\[\d+\]', key):
        if part.startswith('['):
            index = int(part[1:-1])
            if not isinstance(node, (list, tuple)) or index >= len(node):
                return MISSING
            node = node[index]
        else:
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
    return node


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the page writes either."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _holds(actual: Any, expected: Any) -> bool:
    if expected is None:  # the builders read an absent key as None
        return actual is MISSING or actual is None
    return actual is not MISSING and _plain(actual) == _plain(expected)


def _config_files() -> List[str]:
    """Every runnable config except the toy ones and the multimodal ones (no recipe)."""
    return sorted(p.relative_to(REPO_ROOT).as_posix()
                  for p in (REPO_ROOT / 'configs').rglob('*.py')
                  if not {'_base_', 'toy', 'multimodal', '__pycache__'} & set(p.parts))


def test_the_page_has_tables_with_configs_and_checks():
    assert len(TABLES) >= 9, [t.title for t in TABLES]
    for table in TABLES:
        assert table.configs, f'"{table.title}": its Configs: line matches no file'
        assert table.checks, f'"{table.title}": no `key = value` in its last column'
        for check in table.checks:
            assert any(check.name in Path(c).name for c in table.configs), (
                f'"{table.title}", row "{check.setting}": `{check.name}:` matches none of '
                f'{table.configs}')


def test_every_config_has_its_recipe_on_the_page():
    listed = {c for table in TABLES for c in table.configs}
    missing = [c for c in _config_files() if c not in listed]
    assert not missing, f'configs with no table in docs/recipes.md: {missing}'


@pytest.mark.parametrize('table', TABLES, ids=[t.title for t in TABLES])
def test_configs_hold_the_recipe_of_the_page(table):
    failures, count = [], 0
    for path in table.configs:
        merged = _merged(path)
        for check in table.checks:
            if check.name not in Path(path).name:
                continue
            count += 1
            actual = _lookup(merged, check.key)
            if not _holds(actual, check.value):
                shown = 'absent' if actual is MISSING else repr(actual)
                failures.append(f'{path}: row "{check.setting}": {check.key} is {shown}, the '
                                f'page says {check.value!r}')
    print(f'{table.title}: {count} values checked in {len(table.configs)} configs')
    assert not failures, '\n'.join(failures)


def test_the_page_reader_finds_wrong_values(tmp_path):
    page = tmp_path / 'recipes.md'
    page.write_text(
        '## A\n\nConfigs: `configs/detection/secvit/retinanet_secvit-t_fpn_1x_coco.py`\n\n'
        '| setting | paper | code | ours |\n|---|---|---|---|\n'
        '| lr | x | y | `optim_wrapper.optimizer.lr = 0.0004`, '
        '`secvit-t: train_cfg.max_epochs = 12`, `--amp` |\n')
    (table, ) = read_tables(page)
    assert [c.key for c in table.checks] == ['optim_wrapper.optimizer.lr', 'train_cfg.max_epochs']
    merged = _merged(table.configs[0])
    assert not _holds(_lookup(merged, 'optim_wrapper.optimizer.lr'), 0.0004)
    assert _holds(_lookup(merged, 'train_cfg.max_epochs'), 12)
    assert _holds(_lookup(merged, 'no.such[3].key'), None)
    page.write_text(page.read_text().replace('`--amp`', '`lr=1 = 2`'))
    with pytest.raises(AssertionError, match='cannot read the check'):
        read_tables(page)


# ImageNet: the formulas of the authors' script (SecViT classfication_release/main.py).
IN1K_CONFIGS = [c for c in _config_files() if '/classification/' in c
                and any(h.get('type') == 'EMAHook' for h in _merged(c).get('custom_hooks', []))]


@pytest.mark.parametrize('path', IN1K_CONFIGS, ids=lambda p: Path(p).stem)
def test_lr_and_ema_follow_the_batch_size(path):
    """lr 5e-4 x batch / 512, EMA decay 0.99996 ** (batch / 512) per iteration, with the batch
    of the file name (GPUs x images per GPU)."""
    gpus, per_gpu = map(int, re.search(r'_(\d+)xb(\d+)_', Path(path).name).groups())
    merged = _merged(path)
    batch = gpus * per_gpu
    assert merged['train_dataloader']['batch_size'] == per_gpu
    assert merged['optim_wrapper']['optimizer']['lr'] == pytest.approx(5e-4 * batch / 512)
    (ema, ) = [h for h in merged['custom_hooks'] if h['type'] == 'EMAHook']
    assert ema['momentum'] == pytest.approx(1 - 0.99996 ** (batch / 512), rel=1e-3)


def _build_on_meta(cfg: Config) -> torch.nn.Module:
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope), torch.device('meta'):
        return registry.build(copy.deepcopy(cfg.model))


def _decay_by_name(path: str) -> Dict[str, float]:
    """The weight decay mmengine's optimizer constructor gives each parameter of the model."""
    cfg = Config.fromfile(REPO_ROOT / path)
    model = _build_on_meta(cfg)
    constructor = DefaultOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=cfg.optim_wrapper.optimizer),
        cfg.optim_wrapper.get('paramwise_cfg'))
    groups: List[dict] = []
    constructor.add_params(groups, model)
    names = {id(p): n for n, p in model.named_parameters()}
    base = cfg.optim_wrapper.optimizer.weight_decay
    return {names[id(g['params'][0])]: g.get('weight_decay', base) for g in groups}


def _norm_modules(model: torch.nn.Module) -> Dict[str, str]:
    """Name -> type of every norm layer (BatchNorm, LayerNorm, GroupNorm, InstanceNorm)."""
    return {name: type(m).__name__ for name, m in model.named_modules() if is_norm(m)}


DET = 'configs/detection/secvit/'
SEG = 'configs/segmentation/secvit/'


@pytest.mark.parametrize('path', [f'{DET}mask-rcnn_secvit-t_fpn_1x_coco.py',
                                  f'{SEG}upernet_secvit-s_8xb2-160k_ade20k-512x512.py'],
                         ids=lambda p: Path(p).stem)
def test_dense_configs_exempt_what_the_authors_exempt(path):
    """The authors exempt names with `norm` (their blocks' LayerNorms, output norms and
    `downsample.norm` BatchNorms); their stem BatchNorms and the heads' norms decay."""
    decay = _decay_by_name(path)
    model = _build_on_meta(Config.fromfile(REPO_ROOT / path))
    norms = _norm_modules(model)
    exempt = {n for n, d in decay.items() if d == 0}
    expected = {f'{m}.{p}' for m in norms for p in ('weight', 'bias')
                if m.startswith('backbone.') and not m.startswith('backbone.patch_embed')}
    assert exempt == expected
    stem = [n for n in decay if n.startswith('backbone.patch_embed') and '.bn.' in n]
    heads = [n for n in decay if n.rsplit('.', 1)[0] in norms and not n.startswith('backbone.')]
    assert stem and all(decay[n] > 0 for n in stem + heads)


def test_cascade_exempts_every_norm_and_retinanet_and_fpn_none():
    decay = _decay_by_name(f'{DET}cascade-mask-rcnn_secvit-s_fpn_ms-3x_coco.py')
    model = _build_on_meta(Config.fromfile(REPO_ROOT / DET /
                                           'cascade-mask-rcnn_secvit-s_fpn_ms-3x_coco.py'))
    norms = _norm_modules(model)
    assert {n for n, d in decay.items() if d == 0} == {
        n for n in decay if n.rsplit('.', 1)[0] in norms}
    for path in (f'{DET}retinanet_secvit-t_fpn_1x_coco.py',
                 f'{SEG}fpn_secvit-t_8xb2-80k_ade20k-512x512.py'):
        assert min(_decay_by_name(path).values()) > 0, path


def test_imagenet_exempts_the_one_dimensional_parameters():
    """timm's rule in the authors' script: no decay for 1-D parameters and biases."""
    path = 'configs/classification/secvit/secvit-b_8xb128_in1k.py'  # B: with layer scale
    decay = _decay_by_name(path)
    model = _build_on_meta(Config.fromfile(REPO_ROOT / path))
    expected = {n for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith('.bias')}
    assert {n for n, d in decay.items() if d == 0} == expected
    assert any('gamma' in n for n in decay if n not in expected)


@pytest.mark.e2e
@pytest.mark.usefixtures('single_thread')
def test_3x_crop_branch_trains_an_iteration(toy_data_root, tmp_path):
    """The 3x policy with its crop branch forced: resize, RandomCrop, resize, one iteration."""
    cfg = Config.fromfile(REPO_ROOT / DET / 'mask-rcnn_secvit-s_fpn_ms-3x_coco.py')
    cfg.model.backbone.arch = 't'  # the pipeline is under test; T is the cheaper backbone
    cfg = shrink_config(cfg, toy_data_root, tmp_path, image_size=64, batch_size=2)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    (policy, ) = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoice']
    assert [t.type for t in policy.transforms[1]] == [
        'RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
    policy.prob = [0., 1.]
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 1
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
