"""sec_mm's model index: the classifiers mmpretrain finds by name.

``model-index.yml`` imports one ``metafile.yml`` per model folder under ``configs/`` (the
format of mmpretrain's and mmdet's own model zoos, which ``mim search`` also reads). The
files sit where OpenMMLab packages keep theirs:

- a source checkout or an editable install: the repository root, beside ``sec_mm/``;
- a regular install (wheel, ``pip install .``): ``sec_mm/.mim/``, filled by ``setup.py``.

:func:`register_model_index` adds the classification metafiles to mmpretrain's ``ModelHub``,
so ``mmpretrain.list_models('*secvit*')``, ``get_model('secvit-t_8xb128_in1k')`` and
``inference_model('secvit-t_8xb128_in1k', img)`` work. The detection and segmentation
metafiles stay out of the hub: mmpretrain's ``get_model`` cannot build mmdet or mmseg models.
"""
import importlib
import warnings
from pathlib import Path
from typing import List, Optional

__all__ = ['MODEL_INDEX', 'mim_root', 'classification_metafiles', 'register_model_index']

MODEL_INDEX = 'model-index.yml'

_PACKAGE_DIR = Path(__file__).resolve().parent
_registered = False


def mim_root() -> Optional[Path]:
    """The folder holding ``model-index.yml`` and ``configs/``, or None if there is none."""
    for root in (_PACKAGE_DIR / '.mim', _PACKAGE_DIR.parent):
        if (root / MODEL_INDEX).is_file() and (root / 'configs').is_dir():
            return root
    return None


def classification_metafiles(root: Path) -> List[Path]:
    """The metafiles of the ImageNet classifiers under ``root/configs/classification``."""
    return sorted((root / 'configs' / 'classification').glob('*/metafile.yml'))


def register_model_index() -> bool:
    """Register sec_mm's classifiers with mmpretrain's ``ModelHub``; idempotent.

    Returns:
        bool: Whether they are registered (False when mmpretrain is not installed or the
        package was installed without its configs).
    """
    global _registered
    if _registered:
        return True
    try:
        model_hub = importlib.import_module('mmpretrain.apis').ModelHub
    except ImportError:
        return False
    root = mim_root()
    if root is None:
        warnings.warn(f'sec_mm: no {MODEL_INDEX} in {_PACKAGE_DIR / ".mim"} nor in '
                      f'{_PACKAGE_DIR.parent}, so mmpretrain cannot find the SEC models by '
                      'name; reinstall sec_mm from its source tree (`pip install .`).')
        return False
    for metafile in classification_metafiles(root):
        # Config paths in the metafiles are relative to the root, as in mmpretrain's.
        model_hub.register_model_index(metafile, config_prefix=root)
    _registered = True
    return True
