import os
import sys
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
