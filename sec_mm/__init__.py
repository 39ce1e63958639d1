"""sec_mm: Semantic Equitable Clustering (SEC) models for mmpretrain, mmdet and mmseg.

Importing the package (as a config's ``custom_imports`` does) readies the installed
codebases for SEC models: it registers every model into their registries, lets
``torch.load``'s weights-only default read mmengine checkpoints (so the codebases' own
tools and inferencers load ours), and adds the SEC classifiers to mmpretrain's model index.
"""
from .registry import register_all_modules
from .model_index import register_model_index
from .checkpoint import register_checkpoint_safe_globals
from .version import __version__

register_all_modules()
register_checkpoint_safe_globals()
register_model_index()

__all__ = ['__version__', 'register_all_modules']
