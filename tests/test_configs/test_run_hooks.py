"""Every SEC training config carries sec_mm's run hooks, so that the codebases' own tools (with
``custom_imports``) stop on non-finite losses, save on preemption and resume exactly too."""
from pathlib import Path

import pytest
from mmengine.config import Config

from sec_mm.engine.launch import RUN_HOOKS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for task in ('classification', 'detection', 'segmentation')
                 for p in (REPO / 'configs' / task).glob('*/*.py'))


def test_there_are_training_configs():
    assert len(CONFIGS) >= 36


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_has_the_run_hooks_after_its_own(path):
    hooks = [h['type'] for h in Config.fromfile(str(path)).get('custom_hooks') or []]
    assert hooks[-len(RUN_HOOKS):] == list(RUN_HOOKS), hooks
    if 'secvit-t_8xb128_in1k' in path.name or 'sec-deit-s_4xb256' in path.name:
        assert hooks[0] == 'EMAHook'  # the recipe's EMA stays
