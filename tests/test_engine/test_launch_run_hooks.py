"""The run hooks through the tools' options (sec_mm.engine.launch): tools/train.py adds the
non-finite guard, exact resume and preemption hooks, tools/test.py the guard; --resume keeps
the checkpoint's seed."""
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger

from sec_mm.engine.launch import (RUN_HOOKS, add_custom_hooks, apply_test_options,
                                  apply_train_options, load_config)

REPO = Path(__file__).resolve().parents[2]
CLS = REPO / 'configs/classification/secvit/secvit-t_8xb128_in1k.py'
SEG = REPO / 'configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py'


def hook_types(cfg) -> list:
    return [h['type'] for h in cfg.custom_hooks]


def test_train_and_test_runs_get_the_run_hooks(tmp_path):
    cfg = apply_train_options(load_config(str(CLS)), str(CLS), work_dir=str(tmp_path))
    # The config's own hooks stay, in front.
    assert hook_types(cfg) == ['EMAHook', 'NonFiniteGuardHook', 'ExactResumeHook',
                               'PreemptionHook']
    checkpoint = tmp_path / 'w.pth'
    torch.save(dict(state_dict={}), checkpoint)
    cfg = load_config(str(SEG))
    cfg.custom_hooks = []  # (the repository's configs carry the run hooks themselves)
    cfg = apply_test_options(cfg, str(SEG), str(checkpoint))
    assert hook_types(cfg) == ['NonFiniteGuardHook']


def test_hooks_a_config_lists_are_not_added_twice():
    cfg = ConfigDict(custom_hooks=[dict(type='PreemptionHook', signals=['SIGUSR2'])])
    add_custom_hooks(cfg, RUN_HOOKS)
    assert cfg.custom_hooks == [dict(type='PreemptionHook', signals=['SIGUSR2']),
                                dict(type='NonFiniteGuardHook'), dict(type='ExactResumeHook')]


@pytest.mark.parametrize('config_seed', [None, 0])
def test_resume_keeps_the_seed_of_the_run_it_continues(tmp_path, config_seed):
    log = tmp_path / 'launch.log'  # a current mmengine logger writing to a file
    MMLogger.get_instance(f'launch-{uuid.uuid4().hex}', log_file=str(log))
    checkpoint = tmp_path / 'iter_4.pth'
    torch.save(dict(state_dict={}, meta=dict(seed=1234, iter=4)), checkpoint)
    cfg = load_config(str(SEG))
    cfg.randomness = dict(seed=config_seed)
    cfg = apply_train_options(cfg, str(SEG), work_dir=str(tmp_path), resume=str(checkpoint))
    assert cfg.randomness.seed == 1234
    assert f'--resume: randomness.seed=1234, the seed of the run being resumed (the config ' \
           f'says {config_seed})' in log.read_text()
    # A fresh start keeps the config's.
    cfg = load_config(str(SEG))
    cfg.randomness = dict(seed=config_seed)
    assert apply_train_options(cfg, str(SEG), work_dir=str(tmp_path / 'new')).randomness.seed \
        == config_seed
