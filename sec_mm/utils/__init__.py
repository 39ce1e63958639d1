"""Helpers the tools share that are neither a model nor part of a run."""
from .codebases import CODEBASES, codebase_of

__all__ = ['CODEBASES', 'codebase_of']
