"""The SEC-FasterViT configs train one iteration and validate once on the toy ImageNet set."""
import math

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from shrink import shrink_config

import sec_mm  # noqa: F401
from sec_mm.models import SECFasterViT

CONFIGS = ['configs/classification/sec_fastervit/sec-fastervit-0_8xb128_in1k.py',
           'configs/classification/sec_fastervit/sec-fastervit-1_8xb128_in1k.py']


pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.mark.e2e
@pytest.mark.parametrize('path', CONFIGS, ids=[p.rsplit('/', 1)[-1][:-3] for p in CONFIGS])
def test_config_trains_an_iteration_and_validates(path, repo_root, toy_data_root, tmp_path):
    pytest.importorskip(
        'fastervit', reason='SEC-FasterViT needs the fastervit extra: pip install '
        '"sec_mm[fastervit]"')
    cfg = shrink_config(Config.fromfile(repo_root / path), toy_data_root, tmp_path,
                        image_size=64, batch_size=2)
    runner = Runner.from_cfg(cfg)
    assert type(runner.model.backbone) is SECFasterViT
    runner.train()
    assert runner.iter == 1
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    top1 = runner.message_hub.get_scalar('val/accuracy/top1').current()
    assert 0 <= top1 <= 100
