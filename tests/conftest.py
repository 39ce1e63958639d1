from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / 'shared'


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    """The authors' reference data (checkpoint key lists, numeric fixture) in ../shared."""
    path = SHARED / 'reference'
    if not path.is_dir():
        raise FileNotFoundError(f'{path} is missing: the reference data lives in ../shared '
                                'beside the repository.')
    return path


# Small enough for CPU tests, large enough for SECViT's four strides and a few objects.
TOY_DATA_SETTINGS = dict(num_train=6, num_val=4, image_size=128, seed=0)


@pytest.fixture(scope='session')
def toy_data_root(tmp_path_factory) -> Path:
    """A folder with ``toy_coco``, ``toy_ade`` and ``toy_imagenet`` (see
    tools/misc/make_toy_datasets.py): ``TOY_DATA_SETTINGS`` images, made once per session."""
    from tool_helpers import load_tool
    module = load_tool('misc/make_toy_datasets.py')
    root = tmp_path_factory.mktemp('toy_data')
    module.make_toy_datasets(module.KINDS, root, **TOY_DATA_SETTINGS)
    return root


@pytest.fixture(scope='module')
def single_thread():
    """One intra-op thread for a module's tests, restored afterwards: small inputs are
    latency-bound, and OpenMP threads spinning on shared cores only slow them down. A module
    takes it with ``pytestmark = pytest.mark.usefixtures('single_thread')``."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='session')
def dist_env() -> dict:
    """Environment for the two-process tests, from the host: two GPUs (nccl) where there are
    at least two, else two CPU processes (gloo) with a single GPU hidden (two processes
    cannot share one GPU under nccl)."""
    import torch
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        return {'CUDA_VISIBLE_DEVICES': ''}
    return {}


def pytest_generate_tests(metafunc):
    """``cpu_autocast_dtype``: bfloat16 and float16, the latter skipped (with the reason) on
    torch versions whose CPU autocast has no float16 (before 2.2)."""
    if 'cpu_autocast_dtype' not in metafunc.fixturenames:
        return
    import torch
    try:
        with torch.autocast('cpu', dtype=torch.float16):
            pass
        float16_reason = None
    except RuntimeError as error:
        float16_reason = f'torch {torch.__version__}: {error}'
    metafunc.parametrize('cpu_autocast_dtype', [
        pytest.param(torch.bfloat16, id='bf16'),
        pytest.param(torch.float16, id='fp16',
                     marks=[pytest.mark.skipif(float16_reason is not None,
                                               reason=str(float16_reason))])])
