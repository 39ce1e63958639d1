"""sec_mm: Semantic Equitable Clustering (SEC) models for mmpretrain, mmdet and mmseg.

Importing the package (as a config's ``custom_imports`` does) readies the installed
codebases for SEC models: it registers every model into their registries, makes every
checkpoint load through mmengine weights-only and checked (so the codebases' own tools and
inferencers read mmengine checkpoints, and no checkpoint runs code), and adds the SEC
classifiers to mmpretrain's model index.
"""
from .checkpoint import secure_checkpoint_loading
from .model_index import register_model_index
from .registry import register_all_modules
from .version import __version__

register_all_modules()
secure_checkpoint_loading()
register_model_index()

__all__ = ['__version__', 'register_all_modules']
