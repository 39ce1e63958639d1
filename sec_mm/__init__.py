"""sec_mm: Semantic Equitable Clustering (SEC) models for mmpretrain, mmdet and mmseg.

Importing the package (as a config's ``custom_imports`` does) readies the installed
codebases for SEC models: it registers every model into their registries and lets
``torch.load``'s weights-only default read mmengine checkpoints (so the codebases' own
tools and inferencers load ours).
"""
from .registry import register_all_modules
from .utils.setup_env import register_checkpoint_safe_globals
from .version import __version__

register_all_modules()
register_checkpoint_safe_globals()

__all__ = ['__version__', 'register_all_modules']
