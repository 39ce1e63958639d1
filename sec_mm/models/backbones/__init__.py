import importlib.util

from .secvit import SECViT

__all__ = ['SECViT']

if importlib.util.find_spec('mmpretrain') is not None:
    # SEC-Swin and SEC-DeiT (sec_deit.py) subclass mmpretrain's Swin and ViT.
    from .sec_swin import SECSwinTransformer  # noqa: F401
    from .sec_deit import SECVisionTransformer  # noqa: F401
    # Imports the optional fastervit package only when a model is built.
    from .sec_fastervit import SECFasterViT  # noqa: F401
    __all__ += ['SECSwinTransformer', 'SECVisionTransformer', 'SECFasterViT']
