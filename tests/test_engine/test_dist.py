"""sec_mm.engine.dist: device-agnostic distributed set-up."""
import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from sec_mm.engine import dist as dist_utils
from sec_mm.engine.dist import (adapt_cfg_to_device, init_distributed, revert_sync_bn_cfg,
                               select_dist_backend)

import mmseg  # noqa: E402

from net_helpers import free_port

# A stock mmseg config with SyncBN in backbone, decode head and auxiliary head.
STOCK_UPERNET = (Path(mmseg.__file__).parent / '.mim' / 'configs' / 'upernet' /
                 'upernet_r18_4xb4-160k_ade20k-512x512.py')


@pytest.fixture
def pretend_cuda(monkeypatch):
    """Take the CUDA branch of our helpers without a GPU (only our own logic runs)."""
    monkeypatch.setattr(dist_utils, 'cuda_available', lambda: True)
    monkeypatch.setattr(torch_dist, 'is_nccl_available', lambda: True)


@pytest.fixture
def pretend_no_cuda(monkeypatch):
    """Take the CPU branch of our helpers whatever the host has."""
    monkeypatch.setattr(dist_utils, 'cuda_available', lambda: False)


def test_backend_is_gloo_without_cuda(pretend_no_cuda):
    assert select_dist_backend() == 'gloo'


def test_backend_follows_the_host():
    expected = 'nccl' if torch.cuda.is_available() and torch_dist.is_nccl_available() else 'gloo'
    assert select_dist_backend() == expected


def test_backend_is_nccl_with_cuda(pretend_cuda):
    assert select_dist_backend() == 'nccl'


def test_sync_bn_configs_become_bn_everywhere():
    cfg = Config.fromfile(STOCK_UPERNET)
    assert 'SyncBN' in str(cfg.model)
    count = revert_sync_bn_cfg(cfg.model)
    # backbone, decode head and auxiliary head use SyncBN in the stock config
    assert count == 3
    assert 'SyncBN' not in str(cfg.model)
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert revert_sync_bn_cfg(
        [dict(type='MMSyncBN'), (dict(norm=dict(type=torch.nn.SyncBatchNorm)), )]) == 2


def test_cpu_distributed_cfg_builds_a_model_without_sync_bn(pretend_no_cuda):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(STOCK_UPERNET)
    cfg.model.pretrained = None  # no weights are loaded: init_weights is not called
    adapt_cfg_to_device(cfg, 'pytorch')
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_cpu_distributed_wrapper_gets_no_device_ids(pretend_no_cuda):
    cfg = Config(dict(model=dict(type='M'), find_unused_parameters=True, sync_bn='torch'))
    adapt_cfg_to_device(cfg, 'pytorch')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=True)
    assert cfg.sync_bn is None
    # A wrapper from the config keeps its settings.
    cfg = Config(dict(model=dict(type='M'), model_wrapper_cfg=dict(
        type='MMDistributedDataParallel', find_unused_parameters=True)))
    adapt_cfg_to_device(cfg, 'slurm')
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                         find_unused_parameters=True, device_ids=None)
    # Not distributed: no wrapper at all.
    cfg = Config(dict(model=dict(type='M')))
    adapt_cfg_to_device(cfg, 'none')
    assert 'model_wrapper_cfg' not in cfg


def test_cuda_cfg_only_sets_the_backend(pretend_cuda):
    cfg = Config.fromfile(STOCK_UPERNET)
    before = copy.deepcopy(cfg.model)
    adapt_cfg_to_device(cfg, 'pytorch')
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert cfg.model == before and 'model_wrapper_cfg' not in cfg


def test_init_distributed_nothing_to_do():
    assert init_distributed('none') is False
    with pytest.raises(ValueError, match='launcher'):
        init_distributed('mpi4')


def test_init_distributed_explains_missing_env(monkeypatch, pretend_no_cuda):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='dist_train.sh'):
        init_distributed('pytorch')


@pytest.mark.parametrize('launcher', ['pytorch', 'slurm'])
def test_init_distributed_creates_a_gloo_group_on_cpu(launcher, monkeypatch, pretend_no_cuda):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    if launcher == 'pytorch':
        monkeypatch.setenv('RANK', '0')
        monkeypatch.setenv('WORLD_SIZE', '1')
    else:
        monkeypatch.setenv('SLURM_PROCID', '0')
        monkeypatch.setenv('SLURM_NTASKS', '1')
        monkeypatch.setenv('SLURM_LOCALID', '0')
        monkeypatch.setenv('SLURM_NODELIST', 'node-1')
    try:
        assert init_distributed(launcher) is True
        assert torch_dist.get_backend() == 'gloo'
        assert torch_dist.get_world_size() == 1
        tensor = torch.ones(2)
        torch_dist.all_reduce(tensor)
        assert tensor.tolist() == [1., 1.]
        assert init_distributed(launcher) is False  # already initialised
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
