"""sec_mm: Semantic Equitable Clustering (SEC) models for mmpretrain, mmdet and mmseg.

Importing the package registers every model into the installed codebases' registries.
"""
from .registry import register_all_modules
from .version import __version__

register_all_modules()

__all__ = ['__version__', 'register_all_modules']
