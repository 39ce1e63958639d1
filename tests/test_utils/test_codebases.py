"""sec_mm.utils.codebases: which codebase a config belongs to."""
import pytest
from mmengine.config import Config

from sec_mm.utils import codebase_of


def test_codebase_of():
    assert codebase_of(Config(dict(default_scope='mmseg'))) == 'mmseg'
    with pytest.raises(ValueError, match='default_scope'):
        codebase_of(Config(dict()))
    with pytest.raises(ValueError, match='mmocr'):
        codebase_of(Config(dict(default_scope='mmocr')))
