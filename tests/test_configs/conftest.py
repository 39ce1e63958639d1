"""Toy data for the config tests.

Temporary: generates the toy sets with the real generator until the session fixture
``toy_data_root`` exists in tests/conftest.py; then this file goes away.
"""
import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='session')
def toy_data_root(tmp_path_factory) -> Path:
    path = REPO_ROOT / 'tools' / 'misc' / 'make_toy_datasets.py'
    spec = importlib.util.spec_from_file_location('make_toy_datasets', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp('toy_data')
    module.make_toy_datasets(module.KINDS, root, num_train=4, num_val=2, image_size=128)
    return root
