"""tools/install_mmcv.sh and the README's install route for a torch newer than 2.1: a fresh
virtual environment gets torch, mmcv with its compiled ops, sec_mm with the OpenMMLab stack,
and the toy detector trains."""
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'install_mmcv.sh'
PREBUILT = REPO.parent / 'shared' / 'wheels'  # mmcv 2.1.0 compiled for torch 2.14.1, cp311
TOY_DET = REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py'


def run(command, **kwargs) -> str:
    done = subprocess.run([str(c) for c in command], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, **kwargs)
    assert done.returncode == 0, f'{command} exited {done.returncode}:\n{done.stdout[-6000:]}'
    return done.stdout


def test_cache_key_names_python_torch_and_ops():
    env = dict(os.environ, PYTHON=sys.executable)
    key = run(['bash', SCRIPT, '--print-key'], env=env, timeout=120).strip()
    python = f'cp{sys.version_info[0]}{sys.version_info[1]}'
    assert key.startswith(python) and f'-torch{torch.__version__}-' in key
    assert key.endswith('-cpuops') or '-cuda' in key


def test_an_environment_with_working_ops_is_left_alone():
    env = dict(os.environ, PYTHON=sys.executable, MMCV_CACHE_DIR='/nonexistent')
    log = run(['bash', SCRIPT], env=env, timeout=300)
    assert 'already works here; nothing to do' in log


def test_unknown_argument():
    done = subprocess.run(['bash', str(SCRIPT), '--bogus'], capture_output=True, text=True)
    assert done.returncode == 2 and '--bogus' in done.stderr


@pytest.mark.e2e
def test_fresh_environment_readme_route(tmp_path, toy_data_root):
    wheel = sorted(PREBUILT.glob('mmcv-2.1.0-cp311-*.whl'))
    if sys.version_info[:2] != (3, 11) or not wheel:
        pytest.skip(f'needs Python 3.11 and the prebuilt mmcv wheel in {PREBUILT} (a cold '
                    'mmcv build takes about 35 minutes)')
    env_dir = tmp_path / 'env'
    try:
        venv.EnvBuilder(with_pip=True).create(env_dir)
        python = env_dir / 'bin' / 'python'
        # The README's lines, in order.
        run([python, '-m', 'pip', 'install', '-q', 'torch==2.14.1', 'torchvision==0.29.1'],
            timeout=1200)
        env = dict(os.environ, PYTHON=str(python), MMCV_WHEEL_DIR=str(PREBUILT),
                   MMCV_CACHE_DIR=str(tmp_path / 'cache'))
        log = run(['bash', SCRIPT], env=env, timeout=1800)
        assert 'using the prebuilt' in log and 'nms and RoIAlign run on cpu' in log
        assert 'already works here' in run(['bash', SCRIPT], env=env, timeout=300)
        run([python, '-m', 'pip', 'install', '-q', '-e', f'{REPO}[mim]'], cwd=tmp_path,
            timeout=1200)

        workspace = tmp_path / 'work'
        workspace.mkdir()
        (workspace / 'data').symlink_to(toy_data_root, target_is_directory=True)
        clean = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
        options = ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
                   'default_hooks.logger.interval=1', 'val_cfg=None', 'val_dataloader=None',
                   'val_evaluator=None', 'train_dataloader.dataset.pipeline.2.scale=(128,128)']
        log = run([python, REPO / 'tools' / 'train.py', TOY_DET, '--work-dir', 'train',
                   '--cfg-options', *options], cwd=workspace, env=clean, timeout=900)
        assert 'Iter(train) [2/2]' in log and 'loss:' in log
        assert (workspace / 'train' / 'iter_2.pth').is_file()
        import_check = run([python, '-c', 'import sec_mm, mmcv, torch; print(sec_mm.__file__,'
                            ' mmcv.__version__, torch.__version__)'], env=clean, timeout=300)
        assert str(REPO / 'sec_mm') in import_check and '2.1.0 2.14.1' in import_check
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)  # about 6 GB
