"""Heads; they need mmpretrain and are absent without it."""
from .secvit_cls_head import SECViTClsHead

__all__ = ['SECViTClsHead']
